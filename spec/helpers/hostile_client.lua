-- Hostile clients for spec/hostile_spec.lua, each mode its own process
-- (LuaSocket only: nothing of resilnet), so the server under test shares
-- its loop with no attacker. Every mode ends by itself after `hold`
-- seconds at most and prints one line "done <mode> <numbers>".
--
--   lua hostile_client.lua <mode> <host> <port> <hold> [count]
--   slowloris  count connections, each starting a frame, then one byte a
--              second on each
--   partial    count connections, each sending 900,000 bytes of a frame
--              announcing 1,000,000, then nothing
--   pipeline   one connection asking for count 1 MiB replies, never reading
--   slowpipe   the same with SLOWGET, whose handler waits 10 ms first (so
--              every request is taken before the first reply exists)
--   drip       a 60,000-element RESP array sent fast but for its end, then
--              3 bytes every 10 ms; again on a new connection when refused
--   large      one request announcing 100,000 elements; then count
--              connections, each one valid 60,000-element request, reading
--              the reply
--   flood      count connections opened as fast as they go, held
local socket = require "socket"

local mode, host, port = arg[1], arg[2], tonumber(arg[3])
local hold, count = tonumber(arg[4]), tonumber(arg[5] or 1)
local started = socket.gettime()
local function left() return started + hold - socket.gettime() end

local function connect()
  local c = socket.tcp()
  c:settimeout(2)
  local ok = c:connect(host, port)
  if not ok then c:close() return nil end
  return c
end

-- Sends all of data within the time left; false once the server closed.
local function send_all(c, data)
  local i = 1
  c:settimeout(math.max(left(), 0.01))
  while i <= #data do
    local n, err, last = c:send(data, i)
    if n then return true end
    if err ~= "timeout" then return false end
    i = last + 1
    if left() <= 0 then return false end
  end
  return true
end

-- Whether the server closed c (reads what is there without waiting).
local function closed(c)
  c:settimeout(0)
  local _, err, partial = c:receive(65536)
  return err == "closed", partial
end

local function bulk(s) return "$" .. #s .. "\r\n" .. s .. "\r\n" end

local function elements(n)
  local t = {}
  for i = 1, n do t[i] = bulk(("%x"):format(i)) end
  return table.concat(t)
end

local out = {}

if mode == "slowloris" then
  local conns = {}
  for i = 1, count do
    local c = connect()
    if c then
      conns[#conns + 1] = c
      send_all(c, "*1\r\n$100\r\n")
    end
    if i % 50 == 0 then socket.sleep(0.005) end
  end
  local alive, gone = #conns, {}
  while left() > 0 and alive > 0 do
    alive = 0
    for i, c in ipairs(conns) do
      if not gone[i] then
        c:settimeout(0)
        if closed(c) or not c:send("x") then
          gone[i] = true
        else
          alive = alive + 1
        end
      end
    end
    socket.sleep(math.min(1, math.max(left(), 0)))
  end
  out = { #conns, #conns - alive }
elseif mode == "partial" then
  local conns, body = {}, ("p"):rep(900000)
  local head = "*2\r\n$3\r\nSET\r\n$1000000\r\n"
  for _ = 1, count do
    local c = connect()
    if c then
      conns[#conns + 1] = c
      send_all(c, head .. body)
    end
  end
  local gone, n = {}, 0
  while left() > 0 and n < #conns do
    n = 0
    for i, c in ipairs(conns) do
      if gone[i] or closed(c) then gone[i] = true; n = n + 1 end
    end
    socket.sleep(0.1)
  end
  out = { #conns, n }
elseif mode == "pipeline" or mode == "slowpipe" then
  local c = assert(connect())
  local cmd = mode == "pipeline" and "$3\r\nGET" or "$7\r\nSLOWGET"
  send_all(c, ("*2\r\n" .. cmd .. "\r\n$3\r\nbig\r\n"):rep(count))
  while left() > 0 do socket.sleep(0.1) end -- never reads
  out = { count }
elseif mode == "drip" then
  local whole = "*60000\r\n" .. elements(60000)
  local rounds = 0
  while left() > 0 do
    local c = connect()
    if not c then break end
    rounds = rounds + 1
    local i = #whole - 30000
    send_all(c, whole:sub(1, i))
    while left() > 0 and i < #whole - 3 do
      if closed(c) or not send_all(c, whole:sub(i + 1, i + 3)) then break end
      i = i + 3
      socket.sleep(0.01)
    end
    c:close()
  end
  out = { rounds }
elseif mode == "large" then
  local req = "*60001\r\n$5\r\nRPUSH\r\n" .. elements(60000)
  local conns, answered = {}, 0
  local over = assert(connect())
  send_all(over, "*100000\r\n$1\r\na\r\n")
  over:settimeout(math.max(left(), 0.01))
  local line = over:receive("*l") or ""
  for _ = 1, count do
    local c = connect()
    if c then conns[#conns + 1] = c end
  end
  for _, c in ipairs(conns) do send_all(c, req) end
  for _, c in ipairs(conns) do
    c:settimeout(math.max(left(), 0.01))
    if c:receive("*l") == ":60001" then answered = answered + 1 end
  end
  out = { answered, line:find("max_elements", 1, true) and 1 or 0 }
elseif mode == "flood" then
  local conns, refused = {}, 0
  for _ = 1, count do
    local c = connect()
    if c then conns[#conns + 1] = c end
  end
  socket.sleep(0.5)
  for _, c in ipairs(conns) do
    local gone, text = closed(c)
    if gone and text and text:find("max number of clients", 1, true) then
      refused = refused + 1
    end
  end
  while left() > 0 do socket.sleep(0.1) end
  out = { #conns, refused }
else
  error("unknown mode " .. tostring(mode))
end
io.stdout:write("done ", mode, " ", table.concat(out, " "), "\n")
io.stdout:flush()
