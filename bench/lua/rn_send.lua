-- resilnet from Lua with callbacks: conns * depth chains of pool:send,
-- each callback sending the next request.
-- --calls N: stop after N calls instead of after --secs (for callgrind).
local common = require "rnbcommon"
local resilnet = require "resilnet"
local o = common.args(arg)

local pool, request = common.pool(resilnet, o)
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
  common.ready(resilnet, pool, o)
  c0, t0 = os.clock(), resilnet.now()
  for _ = 1, math.min(o.conns * o.depth, limit) do
    outstanding = outstanding + 1
    issued = issued + 1
    send(pool, request, on_reply)
  end
  if o.calls then return end  -- run() returns once every chain is done
  common.measure(resilnet, pool, o, "lua-send",
                 function() return done, failed end,
                 function() stop = true end,
                 function() return outstanding > 0 end)
end)
resilnet.run()
if o.calls then
  common.report("lua-send", done, failed, resilnet.now() - t0,
                os.clock() - c0)
  pool:close()
end
