-- luv in pure Lua: conns connections on one loop, depth requests in flight
-- on each, replies framed in Lua, all requests one read made ready sent
-- back in one write (the same shape as the C baseline).
-- --calls N: stop after N calls instead of after --secs (for callgrind).
local common = require "rnbcommon"
local uv = require "luv"
local o = common.args(arg)

local request = common.frame(o, common.payload(o.size))
local frame_size, proto = common.frame_size, o.proto
local done, stop, open, outstanding = 0, false, 0, 0
local limit, issued = o.calls or math.huge, 0
local batches = {}
local function batch(k)
  local b = batches[k]
  if not b then b = request:rep(k); batches[k] = b end
  return b
end

local conns = {}
local function finish()
  if stop and outstanding == 0 then
    for _, c in ipairs(conns) do
      if not c:is_closing() then c:close() end
    end
  end
end

local function start_conn(tcp)
  local buf, pos = "", 1
  tcp:nodelay(true)
  tcp:read_start(function(err, chunk)
    assert(not err, err)
    if not chunk then return end
    buf = pos > #buf and chunk or buf:sub(pos) .. chunk
    pos = 1
    local k = 0
    while true do
      local n = frame_size(proto, buf, pos)
      if not n then break end
      pos = pos + n
      k = k + 1
    end
    if k == 0 then return end
    done = done + k
    outstanding = outstanding - k
    if done >= limit then stop = true end
    if stop then return finish() end
    k = math.min(k, limit - issued)
    if k == 0 then return end
    issued = issued + k
    outstanding = outstanding + k
    tcp:write(batch(k))
  end)
  local k = math.min(o.depth, limit - issued)
  issued = issued + k
  outstanding = outstanding + k
  tcp:write(batch(k))
end

local c0, t0 -- with --calls: the whole run is measured
local timer = uv.new_timer()
local function begin()
  common.luv_window(uv, timer, o, "luv", function() return done end,
                    function()
                      stop = true
                      timer:close()
                      finish()
                    end)
end

for i = 1, o.conns do
  local tcp = uv.new_tcp()
  conns[i] = tcp
  tcp:connect(o.host, o.port, function(err)
    assert(not err, err)
    open = open + 1
    if open == o.conns then
      c0, t0 = os.clock(), uv.hrtime()
      for _, c in ipairs(conns) do start_conn(c) end
      if not o.calls then begin() end
    end
  end)
end
uv.run()
if o.calls then
  common.report("luv", done, 0, (uv.hrtime() - t0) / 1e9, os.clock() - c0)
end
