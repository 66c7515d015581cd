-- resilnet from Lua, batches (issue 19): conns tasks, each sending
-- pool:batch of --depth requests in a loop (one write, one wait per batch),
-- against redis-benchmark -c conns -P depth. --mode tx: each task runs
-- pool:transaction{ request } instead (MULTI, the request, EXEC), to set
-- a transaction's cost against single calls. calls counts requests (a
-- batch of 16 is 16, a transaction 1). --calls N: stop after N requests
-- (rounded up to whole batches) instead of after --secs (for callgrind).
local common = require "rnbcommon"
local resilnet = require "resilnet"
local o = common.args(arg)
local tx = o.mode == "tx"

local pool, request = common.pool(resilnet, o)
local batch = {}
for i = 1, tx and 1 or o.depth do batch[i] = request end
local done, failed, stop, issued = 0, 0, false, 0
local limit = o.calls or math.huge
local c0, t0

local function worker()
  local send = tx and pool.transaction or pool.batch
  local per = tx and 1 or #batch
  while not stop and issued < limit do
    issued = issued + per
    local replies = send(pool, batch)
    if replies then done = done + per else failed = failed + per end
  end
end

resilnet.spawn(function()
  common.ready(resilnet, pool, o)
  if o.calls then  -- run() returns once every worker is done
    c0, t0 = os.clock(), resilnet.now()
    for _ = 1, o.conns do resilnet.spawn(worker) end
    return
  end
  for _ = 1, o.conns do resilnet.spawn(worker) end
  common.measure(resilnet, pool, o, tx and "lua-tx" or "lua-batch",
                 function() return done, failed end,
                 function() stop = true end)
end)
resilnet.run()
if o.calls then
  common.report(tx and "lua-tx" or "lua-batch", done, failed,
                resilnet.now() - t0, os.clock() - c0)
  pool:close()
end
