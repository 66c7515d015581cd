-- resilnet driven from copas (run by spec/copas_spec.lua as its own
-- process):  lua copas_poll.lua <redis port>
-- resilnet keeps its own loop. A copas thread waits, through copas's own
-- select, until resilnet.pollfd() is readable, then calls
-- resilnet.step(0); the program's loop bounds copas.step by
-- resilnet.timeout() and steps resilnet after it, for resilnet's timers.
-- Meanwhile copas serves a TCP echo to a copas client, and resilnet tasks
-- make real calls to redis-server. Prints "ok <turns> <echoes> <calls>
-- <seconds of the 20 slow calls>".
local copas = require "copas"
local socket = require "socket"
local resilnet = require "resilnet"
local C = require "spec.helpers.host_calls"
local port = assert(tonumber(arg[1]), "usage: copas_poll.lua <redis port>")
assert(resilnet.loop() == "own")

local CALLS, ECHOES, SLOW = 200, 200, 20
local echoes, calls, slow_seconds = 0, 0, nil
local echo_done = false

-- resilnet's descriptor as copas sees a socket: copas.receive() asks it
-- for data, and on "timeout" waits in select() until it is readable.
local woken = false
local descriptor = {
  getfd = function() return resilnet.pollfd() end,
  dirty = function() return false end,
  settimeout = function() end,
  receive = function()
    if woken then woken = false; return "readable" end
    woken = true
    return nil, "timeout"
  end,
}
local resilnet_done = false
copas.addthread(function()
  while not resilnet_done do
    copas.receive(descriptor)
    resilnet.step(0)
  end
end)

local pool = C.pool(port)
resilnet.spawn(function()
  C.count_up(pool, "copas_poll", CALLS, function() calls = calls + 1 end)
  -- And alone, once copas has nothing else to do, calls that redis
  -- answers 50 to 100 ms later (BLPOP on an empty list, timing out): only
  -- resilnet's descriptor can wake copas' select for these replies in
  -- time.
  while not echo_done do resilnet.sleep(0.005) end
  local t0 = socket.gettime()
  for _ = 1, SLOW do
    assert(pool:call({ "BLPOP", "copas_poll_empty", "0.05" }) == resilnet.null)
    calls = calls + 1
  end
  slow_seconds = socket.gettime() - t0
  pool:close()
  resilnet_done = true
end)

-- copas' own sockets: an echo server and a client ping-ponging.
local srv = assert(socket.bind("127.0.0.1", 0))
local _, echo_port = srv:getsockname()
copas.addserver(srv, function(c)
  c = copas.wrap(c)
  local line = c:receive("*l")
  while line do
    c:send(line .. "\n")
    line = c:receive("*l")
  end
end)
copas.addthread(function()
  local skt = socket.tcp()
  assert(copas.connect(skt, "127.0.0.1", echo_port))
  local c = copas.wrap(skt)
  for i = 1, ECHOES do
    c:send("ping " .. i .. "\n")
    assert(c:receive("*l") == "ping " .. i)
    echoes = echoes + 1
  end
  skt:close()
  echo_done = true
end)

-- The program's loop.
local turns, deadline = 0, socket.gettime() + 40
while not (resilnet_done and echo_done) do
  local t = resilnet.timeout()
  copas.step(t or 30)
  resilnet.step(0)
  turns = turns + 1
  if socket.gettime() > deadline then
      error(("timed out: echoes %d calls %d"):format(echoes, calls))
  end
end
-- 20 calls answered 50 to 100 ms later: about 2 s, with room for a
-- loaded machine; about 20 s if copas slept through the replies until
-- resilnet's next timer (about a second away) woke it.
assert(slow_seconds < SLOW * 0.5, ("%d slow calls took %.2f s")
                                  :format(SLOW, slow_seconds))
print(("ok %d %d %d %.2f"):format(turns, echoes, calls, slow_seconds))
