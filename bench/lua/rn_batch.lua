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

local pool, request = common.pool(resilnet, o)
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
  common.ready(resilnet, pool, o)
  for _ = 1, o.conns do resilnet.spawn(worker) end
  common.measure(resilnet, pool, o, tx and "lua-tx" or "lua-batch",
                 function() return done, failed end,
                 function() stop = true end)
end)
resilnet.run()
