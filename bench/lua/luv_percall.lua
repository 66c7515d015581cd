-- luv in pure Lua making calls (resp only): the least per-call work a
-- client library on luv has to do, which luv_client.lua skips (it replays
-- one prebuilt frame and only counts replies): each request encoded from
-- its arguments (one string.format for two, the cheapest there is), each
-- reply's value taken as a string, and handed to that call's own callback
-- (a FIFO per connection), which makes the next call on its connection.
-- What one read's callbacks queue leaves in one write, as luv_client.lua
-- and resilnet do. In bench/run.py's matrix (redis-server) as
-- "luv-percall": the yardstick rn_send.lua and rn_task.lua are compared
-- with beside luv_client.lua.
local common = require "rnbcommon"
local uv = require "luv"
local o = common.args(arg)
assert(o.proto == "resp", "luv_percall.lua speaks resp only")
local payload = common.payload(o.size)
local frame_size, proto = common.frame_size, o.proto
local done, stop, open, outstanding = 0, false, 0, 0
local conns, timer = {}, uv.new_timer()
local concat = table.concat

local function finish()
  if stop and outstanding == 0 then
    for _, c in ipairs(conns) do
      if not c.tcp:is_closing() then c.tcp:close() end
    end
  end
end

-- The cheapest encoding of a request of two arguments (a lower bound for
-- a client that encodes per call).
local fmt = string.format
local function encode(args)
  local a, b = args[1], args[2]
  return fmt("*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", #a, a, #b, b)
end

local reading, current = false, nil
local function call(c, args, cb)
  local q = c.out
  q[#q + 1] = encode(args)
  local cbs = c.cbs
  cbs[c.tail] = cb
  c.tail = c.tail + 1
  if not reading then c.tcp:write(concat(q)); c.out = {} end
end

local request = { "ECHO", payload }
local function on_reply(reply)
  done = done + 1
  outstanding = outstanding - 1
  if o.calls and done + outstanding >= o.calls and not stop then
    stop = true
    timer:close()
  end
  if stop then return finish() end
  outstanding = outstanding + 1
  call(current, request, on_reply)
end

local function start_conn(c)
  local buf, pos = "", 1
  c.tcp:nodelay(true)
  c.tcp:read_start(function(err, chunk)
    assert(not err, err)
    if not chunk then return end
    buf = pos > #buf and chunk or buf:sub(pos) .. chunk
    pos = 1
    reading, current = true, c
    while true do
      local n = frame_size(proto, buf, pos)
      if not n then break end
      local cr = buf:find("\r\n", pos, true)
      local value = buf:sub(cr + 2, pos + n - 3)
      pos = pos + n
      local h = c.head
      local cb = c.cbs[h]
      c.cbs[h] = false
      c.head = h + 1
      if c.head == c.tail then c.head, c.tail = 1, 1 end
      cb(value)
    end
    reading = false
    if #c.out > 0 then c.tcp:write(concat(c.out)); c.out = {} end
  end)
end

local c0, t0 -- with --calls: the whole run is measured
local function begin()
  common.luv_window(uv, timer, o, "luv-percall", function() return done end,
                    function()
                      stop = true
                      timer:close()
                      finish()
                    end)
end

for i = 1, o.conns do
  local c = { tcp = uv.new_tcp(), out = {}, cbs = {}, head = 1, tail = 1 }
  conns[i] = c
  c.tcp:connect(o.host, o.port, function(err)
    assert(not err, err)
    open = open + 1
    if open == o.conns then
      c0, t0 = os.clock(), uv.hrtime()
      for _, d in ipairs(conns) do start_conn(d) end
      for _, d in ipairs(conns) do
        for _ = 1, o.depth do
          outstanding = outstanding + 1
          call(d, request, on_reply)
        end
      end
      if not o.calls then begin() end
    end
  end)
end
uv.run()
if o.calls then
  common.report("luv-percall", done, 0, (uv.hrtime() - t0) / 1e9,
                os.clock() - c0)
end
