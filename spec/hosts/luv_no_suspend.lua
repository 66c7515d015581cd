-- Regression (a wait that cannot suspend): a coroutine on luv's loop that
-- calls pool:call where it cannot yield (inside table.sort's comparator)
-- sent the call anyway; the lua_yield then failed, and the reply later
-- resumed the coroutine from its own, unrelated yield. Run by
-- spec/luv_loop_spec.lua as its own process (luv loaded first).
--
--   lua luv_no_suspend.lua <redis port>
-- Prints "ok" and exits 0, or fails.
local uv = require "luv"
local resilnet = require "resilnet"
local port = assert(tonumber(arg[1]), "usage: luv_no_suspend.lua <port>")
local pool = resilnet.pool{ endpoints = { "127.0.0.1:" .. port },
                            protocol = "resp", timeout = 5 }
local key = "luv_no_suspend:" .. uv.hrtime()

local co = coroutine.create(function()
  local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b)
    pool:call{ "INCR", key }
    return a < b
  end)
  assert(not ok and tostring(err):find("cannot wait here", 1, true),
         "the wait inside table.sort did not raise: " .. tostring(err))
  -- Its own yield: only its resumer below may resume it.
  local got = coroutine.yield("own")
  assert(got == "from the resumer", "resumed by someone else with "
         .. tostring(got))
  -- Nothing was sent: the key was never incremented.
  assert(pool:call{ "GET", key } == resilnet.null, "the refused INCR ran")
  print("ok")
  pool:close()
end)
assert(select(2, assert(coroutine.resume(co))) == "own")
-- Long enough for a reply to the INCR, had it been sent, to arrive.
local t = uv.new_timer()
t:start(200, 0, function()
  t:close()
  assert(coroutine.resume(co, "from the resumer"))
end)
uv.run()
assert(coroutine.status(co) == "dead", "the coroutine did not finish")
