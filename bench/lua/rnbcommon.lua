-- Shared by the Lua benchmark clients: the same options as the C clients
-- (bench/common.h) and the same RESULT line, which bench/run.py parses.
local M = {}

function M.args(argv)
  local o = { proto = "length", host = "127.0.0.1", conns = 1, depth = 1,
              size = 3, secs = 1, warm = 0.2 }
  local i = 1
  while argv[i] do
    local k, v = argv[i]:match("^%-%-(.+)$"), argv[i + 1]
    if not k or v == nil then
      error("usage: --proto resp|length --port N [--conns N] [--depth N]"
            .. " [--size B] [--secs S] [--warm S] [--start-at T]"
            .. " [--tls-ca FILE (resilnet clients: TLS, verified)]")
    end
    o[k:gsub("%-", "_")] = tonumber(v) or v
    i = i + 2
  end
  assert(o.port, "--port is required")
  return o
end

function M.payload(size)
  local t = {}
  for i = 0, size - 1 do t[#t + 1] = string.char(97 + i % 26) end
  return table.concat(t)
end

-- The raw request frame, for clients that frame their own bytes.
function M.frame(o, payload)
  if o.proto == "resp" then
    return ("*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n"):format(#payload, payload)
  end
  local n = #payload
  return string.char(math.floor(n / 16777216) % 256,
                     math.floor(n / 65536) % 256,
                     math.floor(n / 256) % 256, n % 256) .. payload
end

-- Bytes of the complete reply frame starting at pos of buf, or nil.
function M.frame_size(proto, buf, pos)
  local len = #buf - pos + 1
  if proto == "length" then
    if len < 4 then return nil end
    local a, b, c, d = buf:byte(pos, pos + 3)
    local n = 4 + ((a * 256 + b) * 256 + c) * 256 + d
    return len >= n and n or nil
  end
  local cr = buf:find("\r\n", pos, true)
  if not cr then return nil end
  local head = cr + 2 - pos
  if buf:byte(pos) == 36 then -- '$'
    local n = tonumber(buf:sub(pos + 1, cr - 1))
    if n and n >= 0 then
      return len >= head + n + 2 and head + n + 2 or nil
    end
  end
  return head
end

-- The resilnet clients' pool, every connection opened up front and a
-- deadline no call reaches (a benchmark measures speed, not deadlines),
-- and the request each call sends.
function M.pool(resilnet, o)
  local pool = resilnet.pool{
    endpoints = { o.host .. ":" .. o.port }, protocol = o.proto,
    size = o.conns, min_idle = o.conns, max_pending = 1000000000,
    timeout = 60,
    heartbeat = o.proto == "length" and { ping = "p" } or nil,
    tls = o.tls_ca and { cafile = o.tls_ca } or nil, -- --tls-ca FILE
  }
  local payload = M.payload(o.size)
  return pool, o.proto == "resp" and { "ECHO", payload } or payload
end

-- In a task: every connection ready before the clock starts (bounded).
function M.ready(resilnet, pool, o)
  for _ = 1, 2000 do
    if pool:stats().idle >= o.conns then return end
    resilnet.sleep(0.005)
  end
end

-- In a task, once the calls are going: lets the warm-up pass, measures
-- --secs and reports (count() returns the calls completed and failed so
-- far), then stop() and, once nothing is in flight (busy(), by default
-- the pool's counts, says so), closes the pool.
function M.measure(resilnet, pool, o, client, count, stop, busy)
  busy = busy or function()
    return pool:stats().in_flight + pool:stats().pending > 0
  end
  resilnet.sleep(o.warm)
  local n0 = count()
  local c0, t0 = os.clock(), resilnet.now()
  resilnet.sleep(o.secs)
  local n1, failed = count()
  local c1, t1 = os.clock(), resilnet.now()
  stop()
  M.report(client, n1 - n0, failed, t1 - t0, c1 - c0)
  while busy() do resilnet.sleep(0.001) end
  pool:close()
end

--- For a client on luv's loop: after o.warm, counts over o.secs on timer
-- (count() returns the calls completed so far), reports, then stop().
function M.luv_window(uv, timer, o, client, count, stop)
  timer:start(math.floor(o.warm * 1000), 0, function()
    local n0, c0, t0 = count(), os.clock(), uv.hrtime()
    timer:start(math.floor(o.secs * 1000), 0, function()
      M.report(client, count() - n0, 0, (uv.hrtime() - t0) / 1e9,
               os.clock() - c0)
      stop()
    end)
  end)
end

function M.report(client, calls, failed, secs, cpu)
  io.write(("RESULT client=%s calls=%d failed=%d secs=%.6f cpu=%.6f\n")
           :format(client, calls, failed, secs, cpu))
  io.stdout:flush()
end

return M
