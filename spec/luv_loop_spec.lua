-- resilnet on luv's loop (issue 21): a luv program with its own timer, a
-- TCP server made with luv and a resilnet pool on one loop; waiting from
-- a coroutine a luv callback made; the documented errors of waiting
-- outside one; task errors reported as luv reports its own; and the close
-- order at lua_close. Each program runs as its own process
-- (spec/hosts/luv_*.lua) against a real redis-server.
local R = require "spec.helpers.redis"
local S = require "spec.helpers.host_script"
local P = require "spec.helpers.process"

describe("on luv's loop", function()
  if S.missing("luv", "luv (Debian lua-luv)") then return end

  local redis
  setup(function()
    redis = assert(R.start())
  end)
  teardown(function()
    if redis then R.stop(redis) end
  end)

  it("a luv timer, a luv TCP server and a resilnet pool all progress; "
     .. "a wait outside a coroutine raises the documented error", function()
    local ticks, echoes, calls =
      S.counts(S.run("spec/hosts/luv_shared.lua", redis.port))
    assert.is_true(ticks > 0)
    assert.equals(200, echoes)
    assert.equals(200, calls)
  end)

  it("refuses a wait that cannot suspend its coroutine before sending it "
     .. "(the reply resumed the coroutine's own later yield)", function()
    local out, status = S.run("spec/hosts/luv_no_suspend.lua", redis.port)
    assert.equals(0, status, out)
    assert.truthy(out:find("ok", 1, true), out)
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

  it("reports the error of a task a reply resumed through luv's callback "
     .. "hook", function()
    local out, status = S.run("spec/hosts/luv_reply_error.lua")
    assert.is_not.equals(0, status, out)
    assert.truthy(out:find("before", 1, true), out)
    assert.truthy(out:find("reply hello", 1, true), out)
    assert.truthy(out:find("Uncaught Error: [^\n]*boom after a reply"), out)
    assert.falsy(out:find("after\n", 1, true), out)
  end)

  it("reports a policy function's bad answer through luv's hook", function()
    local out, status = S.run("spec/hosts/luv_policy_error.lua", redis.port)
    assert.is_not.equals(0, status, out)
    assert.truthy(out:find("Uncaught Error: resilnet: unexpected answer "
                           .. "'bogus' from a policy function", 1, true), out)
    assert.falsy(out:find("after", 1, true), out)
  end)

  -- The compiler flags for a host embedding the specs' Lua.
  local function lua_flags()
    local exe = P.LUA
    if exe:find("luajit", 1, true) then
      return "-I/usr/include/luajit-2.1 -lluajit-5.1"
    end
    local v = exe:match("lua(5%.%d)")
    return v and ("-I/usr/include/lua%s -llua%s"):format(v, v)
  end
  local static_uv = "/usr/lib/x86_64-linux-gnu/libuv_a.a"

  it("refuses a loop made by another copy of libuv (a static host), and "
     .. "takes one made by the same", function()
    local f = io.open(static_uv)
    if not f or not lua_flags() then
      if f then f:close() end
      pending("needs " .. static_uv .. " (libuv1-dev) and the Lua headers")
      return
    end
    f:close()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir " .. dir) ~= false)
    local function build(name, uv)
      local out, status = S.run { "sh", "-c", P.external("cc -no-pie -o "
        .. "%s/%s spec/hosts/static_host.c %s %s -lpthread -ldl")
        :format(dir, name, lua_flags(), uv) }
      assert.equals(0, status, out)
      return dir .. "/" .. name
    end
    local static = build("static_host", static_uv)
    local shared = build("shared_host", "-luv")
    local out, status = S.run({ static, "spec/hosts/static_host.lua" })
    assert.equals(0, status, out)
    assert.truthy(out:find("refused: resilnet: luv's loop belongs to another "
                           .. "copy of libuv", 1, true), out)
    out, status = S.run({ shared, "spec/hosts/static_host.lua" })
    assert.equals(0, status, out)
    assert.truthy(out:find("loaded on luv", 1, true), out)
    os.execute("rm -rf " .. dir)
  end)
end)
