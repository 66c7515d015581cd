-- A server process frozen with SIGSTOP (its kernel still acknowledges and
-- even accepts): the dead peer is declared within heartbeat.timeout (+10%)
-- and calls move to the second endpoint. (Issue 3.)
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local P = require "spec.helpers.process"

describe("frozen server", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("is declared dead within the heartbeat timeout; calls move on", function()
    local a = P.start_server("resp", 0)
    local b
    local ok, err = pcall(function()
      b = P.start_server("resp", 0)
      local ep_a = "127.0.0.1:" .. a.port
      local pool = H.pool {
        endpoints = { ep_a, "127.0.0.1:" .. b.port },
        size = 1, timeout = 5, connect_timeout = 0.5,
        heartbeat = { interval = 0.1, timeout = 0.5 },
      }
      local dead_at
      pool:on("state", function(ev)
        if ev.endpoint == ep_a and ev.state == "closed"
           and ev.error == "EDEADPEER" and not dead_at then
          dead_at = resilnet.now()
        end
      end)
      -- One connection to each endpoint (size 1 each).
      local warm = 0
      for i = 1, 2 do
        pool:send({ "ECHO", "w" }, nil, function(r) if r == "w" then warm = warm + 1 end end)
      end
      H.go(function()
        for _ = 1, 300 do
          if warm == 2 then return end
          resilnet.sleep(0.01)
        end
      end)
      assert.equal(2, warm)
      assert.equal(2, pool:stats().open)

      P.kill(a, "STOP")
      local frozen_at = resilnet.now()
      -- Calls spread over both endpoints: those on A hang until it is
      -- declared dead, those on B succeed.
      local results = { ok = 0, dead = 0, other = 0 }
      local done = 0
      for i = 1, 10 do
        pool:send({ "ECHO", tostring(i) }, nil, function(r, e)
          if r == tostring(i) then results.ok = results.ok + 1
          elseif e and e.code == "EDEADPEER" then results.dead = results.dead + 1
          else results.other = results.other + 1 end
          done = done + 1
        end)
      end
      H.go(function()
        for _ = 1, 300 do
          if done == 10 and dead_at then return end
          resilnet.sleep(0.01)
        end
      end)
      assert.is_truthy(dead_at, "A was never declared dead")
      local detection = dead_at - frozen_at
      assert.is_true(detection <= 0.5 * 1.1,
                     ("declared dead after %.3f s"):format(detection))
      assert.equal(0, results.other)
      assert.is_true(results.dead >= 1)

      -- After the verdict, calls go to B, even while A keeps accepting.
      local failures = 0
      for i = 1, 200 do
        local r = pool:call { "ECHO", "x" .. i }
        if r ~= "x" .. i then failures = failures + 1 end
      end
      assert.equal(0, failures)
    end)
    pcall(P.kill, a, "CONT")
    pcall(P.kill, a, "KILL")
    if b then pcall(P.kill, b, "KILL") end
    if not ok then error(err, 0) end
  end)
end)
