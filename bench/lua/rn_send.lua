-- resilnet from Lua with callbacks: conns * depth chains of pool:send,
-- each callback sending the next request.
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
local done, failed, stop, outstanding, issued = 0, 0, false, 0, 0
local limit = o.calls or math.huge
local c0, t0

local send = pool.send
local function on_reply(reply)
  outstanding = outstanding - 1
  if reply then done = done + 1 else failed = failed + 1 end
  if not stop and issued < limit then
    outstanding = outstanding + 1
    issued = issued + 1
    send(pool, request, on_reply)
  end
end

resilnet.spawn(function()
  for _ = 1, 2000 do
    if pool:stats().idle >= o.conns then break end
    resilnet.sleep(0.005)
  end
  c0, t0 = os.clock(), resilnet.now()
  for _ = 1, math.min(o.conns * o.depth, limit) do
    outstanding = outstanding + 1
    issued = issued + 1
    send(pool, request, on_reply)
  end
  if o.calls then return end  -- run() returns once every chain is done
  resilnet.sleep(o.warm)
  local n0 = done
  c0, t0 = os.clock(), resilnet.now()
  resilnet.sleep(o.secs)
  local n1, c1, t1 = done, os.clock(), resilnet.now()
  stop = true
  common.report("lua-send", n1 - n0, failed, t1 - t0, c1 - c0)
  while outstanding > 0 do resilnet.sleep(0.001) end
  pool:close()
end)
resilnet.run()
if o.calls then
  common.report("lua-send", done, failed, resilnet.now() - t0,
                os.clock() - c0)
  pool:close()
end
