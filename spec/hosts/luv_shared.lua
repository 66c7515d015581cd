-- A luv program with resilnet on luv's loop (run by spec/luv_loop_spec.lua
-- as its own process: luv must be loaded before resilnet, and the process
-- must end through lua_close to test the close order).
--
--   lua luv_shared.lua <redis port>
-- Prints "ok <timer ticks> <echoes> <redis calls>" and exits 0, or fails.
local uv = require "luv"
local resilnet = require "resilnet"
local port = assert(tonumber(arg[1]), "usage: luv_shared.lua <redis port>")

assert(resilnet.loop() == "luv", "resilnet.loop() is " .. resilnet.loop())

local pool = resilnet.pool{ endpoints = { "127.0.0.1:" .. port },
                            protocol = "resp", size = 4, timeout = 5 }

-- A blocking call outside any coroutine: the documented error.
local ok, err = pcall(pool.call, pool, { "PING" })
assert(not ok and tostring(err):find("cannot wait outside a coroutine on "
                                     .. "luv's loop", 1, true),
       "a wait outside a coroutine did not raise: " .. tostring(err))
-- Outside a coroutine pool:close() does not wait: the close goes on in
-- luv's loop.
local spare = resilnet.pool{ endpoints = { "127.0.0.1:" .. port },
                             protocol = "resp" }
assert(spare:close() == true)
ok, err = pcall(resilnet.run)
assert(not ok and tostring(err):find("resilnet.run: the loop is luv's", 1,
                                     true), tostring(err))
ok, err = pcall(resilnet.step, 0)
assert(not ok and tostring(err):find("host runs", 1, true), tostring(err))

local CALLS, ECHOES = 200, 200
local ticks, echoes, calls = 0, 0, 0
local finished = 0
local function finish_one()
  finished = finished + 1
  if finished == 3 then uv.stop() end
end

-- 1. luv's own timer.
local ticker = uv.new_timer()
ticker:start(5, 5, function() ticks = ticks + 1 end)

-- 2. A luv TCP echo server, and a luv client that ping-pongs ECHOES times.
local server = uv.new_tcp()
assert(server:bind("127.0.0.1", 0))
local echo_port = server:getsockname().port
assert(server:listen(16, function(e)
  assert(not e, e)
  local c = uv.new_tcp()
  server:accept(c)
  c:read_start(function(rerr, data)
    assert(not rerr, rerr)
    if data then c:write(data) else c:close() end
  end)
end))
local client = uv.new_tcp()
client:connect("127.0.0.1", echo_port, function(cerr)
  assert(not cerr, cerr)
  client:read_start(function(rerr, data)
    assert(not rerr and data, rerr)
    echoes = echoes + 1
    if echoes < ECHOES then
      client:write("x")
    else
      client:read_stop()
      client:close()
      finish_one()
    end
  end)
  client:write("x")
end)

-- 3. resilnet calls from a coroutine a luv callback made (not a
-- resilnet task), each one a real round trip to redis-server.
local starter = uv.new_timer()
starter:start(1, 0, function()
  starter:close()
  coroutine.wrap(function()
    assert(pool:call({ "DEL", "luv_shared" }))
    for i = 1, CALLS do
      local n = assert(pool:call({ "INCR", "luv_shared" }))
      assert(n == i, "INCR returned " .. tostring(n) .. " for call " .. i)
      calls = calls + 1
    end
    -- A resilnet server on the same loop, and closes that wait in this
    -- coroutine.
    local srv = assert(resilnet.server{ listen = "127.0.0.1:0",
      protocol = "line", handler = function(line) return line:upper() end })
    local host, sport = srv:address()
    local lpool = resilnet.pool{ endpoints = { host .. ":" .. sport },
                                 protocol = "line" }
    assert(lpool:call("hello") == "HELLO")
    assert(lpool:close() == true)
    assert(srv:close() == true)
    assert(not lpool:call("again"), "a closed pool answered")
    finish_one()
  end)()
end)

-- 4. A resilnet task, with resilnet.sleep on luv's loop.
local slept = false
resilnet.spawn(function()
  local t0 = uv.hrtime()
  resilnet.sleep(0.05)
  slept = (uv.hrtime() - t0) >= 45e6
  finish_one()
end)

-- Bounded: the whole program must finish in 20 s.
local guard = uv.new_timer()
guard:start(20000, 0, function()
  io.stderr:write(("timed out: ticks %d echoes %d calls %d\n")
                  :format(ticks, echoes, calls))
  os.exit(1)
end)
guard:unref()

uv.run()
assert(calls == CALLS and echoes == ECHOES and slept,
       ("calls %d echoes %d slept %s"):format(calls, echoes, tostring(slept)))
assert(ticks > 0, "luv's timer never fired")
print(("ok %d %d %d"):format(ticks, echoes, calls))
-- Left open on purpose: the pool (and its connections), luv's timer and
-- server. lua_close must close resilnet's handles before luv's loop
-- finalizer walks the loop.
