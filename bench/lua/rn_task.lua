-- resilnet from Lua, in tasks: conns * depth tasks, each calling
-- pool:call in a loop (each call suspends its task until the reply).
-- --calls N: stop after N calls instead of after --secs (for callgrind).
local common = require "rnbcommon"
local resilnet = require "resilnet"
local o = common.args(arg)

local pool = resilnet.pool{
  endpoints = { o.host .. ":" .. o.port }, protocol = o.proto,
  size = o.conns, min_idle = o.conns, max_pending = 1000000000, timeout = 60,
  heartbeat = o.proto == "length" and { ping = "p" } or nil,
  tls = o.tls_ca and { cafile = o.tls_ca } or nil, -- --tls-ca FILE
}
local payload = common.payload(o.size)
local request = o.proto == "resp" and { "ECHO", payload } or payload
local done, failed, stop, issued = 0, 0, false, 0
local limit = o.calls or math.huge
local c0, t0

local function worker()
  local call = pool.call
  while not stop and issued < limit do
    issued = issued + 1
    local reply = call(pool, request)
    if reply then done = done + 1 else failed = failed + 1 end
  end
end

resilnet.spawn(function()
  for _ = 1, 2000 do   -- every connection ready before the clock starts
    if pool:stats().idle >= o.conns then break end
    resilnet.sleep(0.005)
  end
  if o.calls then  -- run() returns once every worker is done
    c0, t0 = os.clock(), resilnet.now()
    for _ = 1, o.conns * o.depth do resilnet.spawn(worker) end
    return
  end
  for _ = 1, o.conns * o.depth do resilnet.spawn(worker) end
  resilnet.sleep(o.warm)
  local n0 = done
  c0, t0 = os.clock(), resilnet.now()
  resilnet.sleep(o.secs)
  local n1, c1, t1 = done, os.clock(), resilnet.now()
  stop = true
  common.report("lua-task", n1 - n0, failed, t1 - t0, c1 - c0)
  while pool:stats().in_flight + pool:stats().pending > 0 do
    resilnet.sleep(0.001)
  end
  pool:close()
end)
resilnet.run()
if o.calls then
  common.report("lua-task", done, failed, resilnet.now() - t0,
                os.clock() - c0)
  pool:close()
end
