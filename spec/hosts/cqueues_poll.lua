-- resilnet driven from a cqueues controller (run by spec/cqueues_spec.lua
-- as its own process):  lua cqueues_poll.lua <redis port>
-- resilnet keeps its own loop; one cqueues coroutine waits until
-- resilnet.pollfd() is readable or resilnet.timeout() has passed and then
-- calls resilnet.step(0). Meanwhile cqueues runs its own timer and a TCP
-- echo made with cqueues sockets, and resilnet tasks make real calls to
-- redis-server. Prints "ok <ticks> <echoes> <calls>" or fails.
local cqueues = require "cqueues"
local csocket = require "cqueues.socket"
local resilnet = require "resilnet"
local C = require "spec.helpers.host_calls"
local port = assert(tonumber(arg[1]), "usage: cqueues_poll.lua <redis port>")
assert(resilnet.loop() == "own")

local CALLS, ECHOES = 200, 200
local ticks, echoes, calls = 0, 0, 0
local cq = cqueues.new()

-- resilnet, as cqueues sees it: a pollable object.
local driver = {
  pollfd = function() return resilnet.pollfd() end,
  events = function() return "r" end,
  timeout = function() return resilnet.timeout() end,
}
local resilnet_done = false
cq:wrap(function()
  while not resilnet_done do
    cqueues.poll(driver)
    resilnet.step(0)
  end
end)

-- resilnet's work: tasks, each call a round trip to redis-server.
local pool = C.pool(port)
resilnet.spawn(function()
  C.count_up(pool, "cq_poll", CALLS, function() calls = calls + 1 end)
  pool:close()
  resilnet_done = true
end)

-- cqueues' own timer.
local echo_done = false
cq:wrap(function()
  while not (resilnet_done and echo_done) do
    cqueues.sleep(0.005)
    ticks = ticks + 1
  end
end)

-- cqueues' own sockets: an echo server and a client ping-ponging.
local srv = csocket.listen("127.0.0.1", 0)
local _, _, echo_port = srv:localname()
cq:wrap(function()
  local c = srv:accept()
  -- (Not c:lines(): Lua 5.1 cannot yield inside a for iterator.)
  local line = c:read("*l")
  while line do
    c:write(line, "\n")
    line = c:read("*l")
  end
  c:close()
end)
cq:wrap(function()
  local c = csocket.connect("127.0.0.1", echo_port)
  for i = 1, ECHOES do
    c:write("ping ", i, "\n")
    assert(c:read("*l") == "ping " .. i)
    echoes = echoes + 1
  end
  c:close()
  srv:close()
  echo_done = true
end)

local deadline = cqueues.monotime() + 20
while not cq:empty() do
  local ok, err = cq:step(0.5)
  if not ok then error(err, 0) end
  if cqueues.monotime() > deadline then
    error(("timed out: ticks %d echoes %d calls %d"):format(ticks, echoes,
                                                            calls))
  end
end
assert(calls == CALLS and echoes == ECHOES,
       ("calls %d echoes %d"):format(calls, echoes))
assert(ticks > 0)
print(("ok %d %d %d"):format(ticks, echoes, calls))
