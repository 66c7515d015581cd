-- resilnet from Lua, in tasks: conns * depth tasks, each calling
-- pool:call in a loop (each call suspends its task until the reply).
-- --calls N: stop after N calls instead of after --secs (for callgrind).
local common = require "rnbcommon"
local resilnet = require "resilnet"
local o = common.args(arg)

local pool, request = common.pool(resilnet, o)
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
  common.ready(resilnet, pool, o)
  if o.calls then  -- run() returns once every worker is done
    c0, t0 = os.clock(), resilnet.now()
    for _ = 1, o.conns * o.depth do resilnet.spawn(worker) end
    return
  end
  for _ = 1, o.conns * o.depth do resilnet.spawn(worker) end
  common.measure(resilnet, pool, o, "lua-task",
                 function() return done, failed end,
                 function() stop = true end)
end)
resilnet.run()
if o.calls then
  common.report("lua-task", done, failed, resilnet.now() - t0,
                os.clock() - c0)
  pool:close()
end
