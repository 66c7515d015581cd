-- LuaSocket, blocking: one connection per process (run.py starts --conns
-- processes, all told the same --start-at time). Each round writes depth
-- requests in one send and reads depth replies, so depth > 1 pipelines.
local common = require "rnbcommon"
local socket = require "socket"
local o = common.args(arg)

local payload = common.payload(o.size)
local batch = common.frame(o, payload):rep(o.depth)
local sock = assert(socket.connect(o.host, o.port))
sock:setoption("tcp-nodelay", true)

local function read_reply()
  if o.proto == "length" then
    local head = assert(sock:receive(4))
    local a, b, c, d = head:byte(1, 4)
    return assert(sock:receive(((a * 256 + b) * 256 + c) * 256 + d))
  end
  local line = assert(sock:receive("*l"))
  if line:byte(1) == 36 then -- '$': a bulk string and its CRLF
    local n = tonumber(line:sub(2))
    if n >= 0 then return assert(sock:receive(n + 2)) end
  end
  return line
end

local function round()
  assert(sock:send(batch))
  for _ = 1, o.depth do read_reply() end
end

local start = o.start_at or socket.gettime()
if start > socket.gettime() then socket.sleep(start - socket.gettime()) end
local warm_end = start + o.warm
while socket.gettime() < warm_end do round() end
local n, c0, t0 = 0, os.clock(), socket.gettime()
local t_end = t0 + o.secs
local t1 = t0
while t1 < t_end do
  round()
  n = n + o.depth
  t1 = socket.gettime()
end
common.report("luasocket", n, 0, t1 - t0, os.clock() - c0)
sock:close()
