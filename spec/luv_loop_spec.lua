-- resilnet on luv's loop (issue 21): a luv program with its own timer, a
-- TCP server made with luv and a resilnet pool on one loop; waiting from
-- a coroutine a luv callback made; the documented errors of waiting
-- outside one; task errors reported as luv reports its own; and the close
-- order at lua_close. Each program runs as its own process
-- (spec/hosts/luv_*.lua) against a real redis-server.
local R = require "spec.helpers.redis"
local S = require "spec.helpers.host_script"

describe("on luv's loop", function()
  if not S.has("luv") then
    it("needs luv for this Lua", function()
      pending("luv (Debian lua-luv) is not installed for this Lua")
    end)
    return
  end

  local redis
  setup(function()
    redis = assert(R.start())
  end)
  teardown(function()
    if redis then R.stop(redis) end
  end)

  it("a luv timer, a luv TCP server and a resilnet pool all progress; "
     .. "a wait outside a coroutine raises the documented error", function()
    local out, status = S.run("spec/hosts/luv_shared.lua", redis.port)
    assert.equals(0, status, out)
    local ticks, echoes, calls = out:match("ok (%d+) (%d+) (%d+)")
    assert.truthy(ticks, out)
    assert.is_true(tonumber(ticks) > 0)
    assert.equals(200, tonumber(echoes))
    assert.equals(200, tonumber(calls))
  end)

  it("closes resilnet's handles before luv's loop finalizer when resilnet "
     .. "was loaded first and moved with use_loop (crashed without)", function()
    local out, status = S.run("spec/hosts/luv_late.lua", redis.port)
    assert.equals(0, status, out)
    assert.truthy(out:find("ok PONG", 1, true), out)
  end)

  it("reports a task's error through luv's callback hook", function()
    local out, status = S.run("spec/hosts/luv_error.lua")
    assert.is_not.equals(0, status, out)
    assert.truthy(out:find("before", 1, true), out)
    assert.truthy(out:find("Uncaught Error: [^\n]*boom from a resilnet task"),
                  out)
    assert.falsy(out:find("after", 1, true), out)
  end)
end)
