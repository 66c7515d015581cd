-- resilnet demo: resilnet's own server and a client pool in one process.
--
-- A tiny key-value service speaks RESP (the Redis protocol) from a Lua
-- handler; a pool of connections calls it from many tasks at once, then in
-- a pipelined burst of callbacks. Prints what happened and how fast.
--
--   make demo            (or: lua5.4 examples/demo.lua with paths set)

local resilnet = require "resilnet"

local store = {}
local executed = 0

local handlers = {
  SET = function(key, value) store[key] = value; return "OK" end,
  GET = function(key) return store[key] or resilnet.null end,
  INCR = function(key)
    local n = (tonumber(store[key]) or 0) + 1
    store[key] = tostring(n)
    return n
  end,
}

local server = resilnet.server{
  listen = "127.0.0.1:0",
  protocol = "resp",
  handler = function(request)
    executed = executed + 1
    local fn = handlers[string.upper(request[1] or "")]
    if not fn then error("unknown command '" .. tostring(request[1]) .. "'", 0) end
    return fn(request[2], request[3])
  end,
}
local host, port = server:address()
print(("server   listening on %s:%d (resp)"):format(host, port))

local pool = resilnet.pool{
  endpoints = { host .. ":" .. port },
  protocol = "resp",
  size = 4,
  max_pending = 20000,
  timeout = 5,
}

local TASKS, CALLS_PER_TASK, BURST = 8, 500, 10000
local ok, burst_ok, failed = 0, 0, 0
local tasks_time, burst_time, err, missing, stats

-- The server keeps the loop busy until it is closed, so each phase starts
-- the next when its last call completes, and the last one closes up.

-- Phase 3: an error reply and a missing key come back as values, not
-- exceptions; then everything closes and resilnet.run() returns.
local function finish()
  resilnet.spawn(function()
    _, err = pool:call({ "NOPE" })
    missing = pool:call({ "GET", "no-such-key" })
    stats = pool:stats()
    pool:close()
    server:close()
  end)
end

-- Phase 2: a pipelined burst from callbacks.
local function burst()
  local started, answered = resilnet.now(), 0
  for i = 1, BURST do
    pool:send({ "SET", "k" .. i, tostring(i) }, nil, function(reply, e)
      if reply == "OK" then burst_ok = burst_ok + 1 else failed = failed + 1; print("  " .. tostring(e)) end
      answered = answered + 1
      if answered == BURST then burst_time = resilnet.now() - started; finish() end
    end)
  end
end

-- Phase 1: many tasks, each waiting for its own replies.
local started, running = resilnet.now(), TASKS
for t = 1, TASKS do
  resilnet.spawn(function()
    for i = 1, CALLS_PER_TASK do
      local reply, e = pool:call({ "INCR", ("task%d"):format(t) })
      if reply == i then ok = ok + 1 else failed = failed + 1; print("  " .. tostring(e)) end
    end
    running = running - 1
    if running == 0 then tasks_time = resilnet.now() - started; burst() end
  end)
end

resilnet.run()

print(("tasks    %d tasks x %d INCR: %d ok, %d failed in %.3f s (%.0f calls/s)")
  :format(TASKS, CALLS_PER_TASK, ok, failed, tasks_time, ok / tasks_time))
print(("burst    %d pipelined SET callbacks: %d ok in %.3f s (%.0f calls/s)")
  :format(BURST, burst_ok, burst_time, burst_ok / burst_time))
print(("errors   unknown command -> %s"):format(tostring(err)))
print(("nulls    GET of a missing key -> %s"):format(missing == resilnet.null and "resilnet.null" or tostring(missing)))
print(("server   executed %d requests; pool opened %d connections")
  :format(executed, stats.connects))

local expected = TASKS * CALLS_PER_TASK + BURST + 2
if ok ~= TASKS * CALLS_PER_TASK or burst_ok ~= BURST or failed ~= 0 or executed ~= expected then
  print("demo     FAILED")
  os.exit(1)
end
print("demo     ok: every call answered exactly once")
