-- Lifetimes across the Lua/C boundary: reloading the module, closing a
-- state with everything still open, garbage-collected handles.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

local function lua_exe()
  local exe = os.getenv("RESILNET_TEST_LUA")
  if exe and exe ~= "" then return exe end
  -- busted's own interpreter (arg[-1] .. arg[-n] hold it when run directly)
  local i = -1
  while arg and arg[i - 1] do i = i - 1 end
  return arg and arg[i]
end

-- Runs code in a fresh interpreter with this state's module paths; returns
-- (exit ok, output).
local function run_child(code)
  local exe = lua_exe()
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("package.path = %q\npackage.cpath = %q\n"):format(package.path,
                                                            package.cpath))
  f:write(code)
  f:close()
  local p = assert(io.popen("timeout 30 " .. exe .. " " .. script
                            .. " 2>&1; echo \"rc=$?\""))
  local out = p:read("*a")
  p:close()
  os.remove(script)
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc == 0, out
end

describe("lifetimes", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("survives reloading the module in the same state", function()
    local core = require "resilnet.core"
    local _, ep = H.server { protocol = "line" }
    local pool = H.pool { endpoints = { ep }, protocol = "line" }
    local _, err1 = pool:call("a", { timeout = 0.0001 })
    package.loaded["resilnet"] = nil
    package.loaded["resilnet.core"] = nil
    local again = require "resilnet"
    assert.are_not.equal(resilnet, again)
    assert.equal(resilnet.null, again.null)
    assert.equal(core.error_metatable, require("resilnet.core").error_metatable)
    -- old objects keep working through the new dispatcher
    assert.equal("b", pool:call("b"))
    if err1 then assert.is_true(again.is_error(err1)) end
    local p2 = again.pool { endpoints = { ep }, protocol = "line" }
    assert.equal("c", p2:call("c"))
    p2:close()
  end)

  it("closes a state with servers, pools, calls and tasks still open",
     function()
    local exe = lua_exe()
    if not exe then pending("no interpreter to run a child with") return end
    local ok, out = run_child [[
      local resilnet = require "resilnet"
      local srv = assert(resilnet.server { listen = "127.0.0.1:0",
        protocol = "line",
        handler = function(r) resilnet.sleep(30) return r end })
      local host, port = srv:address()
      local pool = resilnet.pool { endpoints = { host .. ":" .. port },
                                   protocol = "line" }
      for _ = 1, 10 do pool:send("x", nil, function() end) end
      resilnet.spawn(function() resilnet.sleep(30) end)
      resilnet.spawn(function() pool:call("y") end)
      resilnet.sleep(0.05) -- requests reach the sleeping handlers
      local idle = resilnet.pool { endpoints = { host .. ":" .. port },
                                   protocol = "line" }
      io.write("closing\n")
      os.exit(0, true)
    ]]
    assert.is_true(ok, out)
    assert.equal("closing\n", out:gsub("rc=%d+%s*$", ""))
  end)

  it("closes pools and servers nobody references any more", function()
    local ok, out = run_child [[
      local resilnet = require "resilnet"
      local core = require "resilnet.core"
      for _ = 1, 20 do
        local srv = assert(resilnet.server { listen = "127.0.0.1:0",
                                             protocol = "line" ,
                                             handler = function(r) return r end})
        local host, port = srv:address()
        local pool = resilnet.pool { endpoints = { host .. ":" .. port },
                                     protocol = "line" }
        assert(pool:call("x") == "x")
      end
      collectgarbage()
      collectgarbage()
      resilnet.run() -- returns: everything collected was closed
      io.write("done\n")
      os.exit(0, true)
    ]]
    assert.is_true(ok, out)
    assert.equal("done\n", out:gsub("rc=%d+%s*$", ""))
  end)

  it("answers each request exactly once even if its task is abandoned",
     function()
    local parked = {}
    local _, ep = H.server {
      protocol = "resp",
      handler = function(req)
        if req[1] == "PARK" then
          -- never resumed: the task and its request become garbage
          parked[#parked + 1] = coroutine.running()
          parked = {}
          coroutine.yield()
        end
        return req[1]
      end,
    }
    local pool = H.pool { endpoints = { ep }, size = 1 }
    local closed = false
    pool:on("state", function(ev) closed = closed or ev.state == "closed" end)
    local _, err = pool:call({ "PARK" }, { timeout = 0.2 })
    assert.equal("ETIMEDOUT", err.code)
    collectgarbage()
    collectgarbage()
    -- the dropped request closes its connection (nothing else could
    -- answer it in order); the pool carries on with a new one
    H.go(function()
      for _ = 1, 2000 do
        if closed then break end
        resilnet.sleep(0.001)
      end
    end)
    assert.is_true(closed)
    assert.equal("NEXT", pool:call { "NEXT" })
  end)
end)
