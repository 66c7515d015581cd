-- resilnet from Lua, batches (issue 19): conns tasks, each sending
-- pool:batch of --depth requests in a loop (one write, one wait per batch),
-- against redis-benchmark -c conns -P depth. --mode tx: each task runs
-- pool:transaction{ request } instead (MULTI, the request, EXEC), to set
-- a transaction's cost against single calls. calls counts requests (a
-- batch of 16 is 16, a transaction 1).
local common = require "rnbcommon"
local resilnet = require "resilnet"
local o = common.args(arg)
local tx = o.mode == "tx"

local pool = resilnet.pool{
  endpoints = { o.host .. ":" .. o.port }, protocol = o.proto,
  size = o.conns, min_idle = o.conns, max_pending = 1000000000, timeout = 60,
}
local payload = common.payload(o.size)
local request = o.proto == "resp" and { "ECHO", payload } or payload
local batch = {}
for i = 1, tx and 1 or o.depth do batch[i] = request end
local done, failed, stop = 0, 0, false

local function worker()
  local send = tx and pool.transaction or pool.batch
  local per = tx and 1 or #batch
  while not stop do
    local replies = send(pool, batch)
    if replies then done = done + per else failed = failed + per end
  end
end

resilnet.spawn(function()
  for _ = 1, 2000 do   -- every connection ready before the clock starts
    if pool:stats().idle >= o.conns then break end
    resilnet.sleep(0.005)
  end
  for _ = 1, o.conns do resilnet.spawn(worker) end
  resilnet.sleep(o.warm)
  local n0 = done
  local c0, t0 = os.clock(), resilnet.now()
  resilnet.sleep(o.secs)
  local n1, c1, t1 = done, os.clock(), resilnet.now()
  stop = true
  common.report(tx and "lua-tx" or "lua-batch", n1 - n0, failed, t1 - t0,
                c1 - c0)
  while pool:stats().in_flight + pool:stats().pending > 0 do
    resilnet.sleep(0.001)
  end
  pool:close()
end)
resilnet.run()
