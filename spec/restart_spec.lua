-- A server process killed with SIGKILL and restarted on the same port:
-- the pool's idle connections to the dead process must never be used.
-- (Issue 3: "the next 1,000 calls all succeed; none reports ECONNRESET".)
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local P = require "spec.helpers.process"

describe("server restart", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("SIGKILL and restart while idle: the next 1,000 calls succeed", function()
    local server = P.server {}
    local ok, proc = pcall(function()
      local pool = H.pool { endpoints = { "127.0.0.1:" .. server.port },
                            size = 4, timeout = 5 }
      -- Warm four connections with concurrent calls.
      local answered = 0
      for i = 1, 4 do
        pool:send({ "ECHO", "warm" .. i }, nil, function(reply)
          if reply == "warm" .. i then answered = answered + 1 end
        end)
      end
      assert.equal("x", pool:call { "ECHO", "x" })
      H.go(function()
        for _ = 1, 200 do
          if answered == 4 then return end
          resilnet.sleep(0.01)
        end
      end)
      assert.equal(4, answered)

      server:kill("KILL")
      local restarted = P.server { port = server.port }
      local failures, resets = 0, 0
      for i = 1, 1000 do
        local reply, err = pool:call { "ECHO", tostring(i) }
        if reply ~= tostring(i) then
          failures = failures + 1
          if err and err.code == "ECONNRESET" then resets = resets + 1 end
        end
      end
      assert.equal(0, resets)
      assert.equal(0, failures)
      return restarted
    end)
    server:close()
    if ok then proc:close() else error(proc, 0) end
  end)
end)
