-- A counting test server: a separate OS process (LuaSocket, one select
-- loop) that speaks `length` (4-byte prefix) or `resp`, and is told by each
-- request what fault to show. It appends to a ledger file, flushed before
-- it acts, so the record survives whatever happens next:
--   "R <id>"  a request for id was received (an attempt reached it)
--   "E <id>"  the request was executed
--
-- A request is the fields  mode id n [ms [padding]]  (resp: an array of
-- bulk strings; length: the fields joined by spaces). The fault `mode`
-- applies to the first n requests for that id; later ones are answered
-- normally ("ok"), so an idempotent retry can succeed. Modes:
--   ok          execute, reply "done <id>"
--   rst_before  reset (RST: SO_LINGER 0) as soon as the request's first
--               bytes show its mode and id, without reading the rest or
--               executing. LuaSocket reads at most 8 KB per turn, so a
--               request padded beyond that still has unread bytes in the
--               kernel when the connection is reset.
--   rst_read    read the whole request, then reset; not executed
--   rst_exec    read, execute, then reset before replying
--   half        read, execute, write the first half of the reply frame,
--               then close (FIN)
--   delay       read, execute, reply after ms milliseconds
--   error       read, reply an error (resp "-ERR ..."; length has no error
--               frame, so a plain "error <id>" body); counted as executed
--   sync        a barrier for the spec: answered once no other connection
--               is open (every client connection has been read to its end
--               or reset), or after 5 s with "busy <n>"
-- "PING" (resp) and "ping" (length) are answered "PONG"/"pong", uncounted.
--
-- As a script: counting_server.lua <protocol> <port> <ledger>; prints
-- "listening <port>". Required as spec.helpers.counting_server it is the
-- specs' side: start, read the ledger, sync, stop.

local socket = require "socket"

---------------------------------------------------------------------------
-- Framing, shared by both sides.

-- Plain arithmetic, no integer operators: the specs run on Lua 5.1 to
-- 5.4 and LuaJIT, and so does this server (RESILNET_TEST_LUA).
local function u32(n)
  local floor = math.floor
  return string.char(floor(n / 16777216) % 256, floor(n / 65536) % 256,
                     floor(n / 256) % 256, n % 256)
end

local function read_u32(s)
  local a, b, c, d = s:byte(1, 4)
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function encode_request(protocol, fields)
  if protocol == "length" then
    local body = table.concat(fields, " ")
    return u32(#body) .. body
  end
  local out = { "*" .. #fields .. "\r\n" }
  for _, f in ipairs(fields) do
    f = tostring(f)
    out[#out + 1] = "$" .. #f .. "\r\n" .. f .. "\r\n"
  end
  return table.concat(out)
end

local function encode_reply(protocol, text, is_error)
  if protocol == "length" then return u32(#text) .. text end
  if is_error then return "-" .. text .. "\r\n" end
  return "$" .. #text .. "\r\n" .. text .. "\r\n"
end

-- Splits a length body into its fields (the padding, if any, is field 5).
local function body_fields(body)
  local f = {}
  for word in body:gmatch("%S+") do
    f[#f + 1] = word
    if #f == 4 then break end
  end
  return f
end

-- One complete request at the start of buf: fields and its size, or nil.
local function parse_request(protocol, buf)
  if protocol == "length" then
    if #buf < 4 then return nil end
    local n = read_u32(buf)
    if #buf < 4 + n then return nil end
    return body_fields(buf:sub(5, 4 + n)), 4 + n
  end
  local count, pos = buf:match("^%*(%d+)\r\n()")
  if not count then
    if #buf > 0 and buf:sub(1, 1) ~= "*" then error("bad resp request") end
    return nil
  end
  local fields = {}
  for i = 1, tonumber(count) do
    local len, start = buf:match("^%$(%d+)\r\n()", pos)
    if not len then return nil end
    local stop = start + tonumber(len) - 1
    if #buf < stop + 2 then return nil end
    fields[i] = buf:sub(start, stop)
    pos = stop + 3
  end
  return fields, pos - 1
end

-- The leading fields of a request that may not have arrived whole yet.
local function peek_fields(protocol, buf)
  local head = buf:sub(1, 96)
  if protocol == "length" then return body_fields(head:sub(5)) end
  local f = {}
  for s in head:gmatch("%$%d+\r\n([^\r]*)\r\n") do
    f[#f + 1] = s
    if #f == 3 then break end
  end
  return f
end

---------------------------------------------------------------------------
-- The specs' side.

if ... == "spec.helpers.counting_server" then
  local P = require "spec.helpers.process"
  local C = { encode_request = encode_request }

  --- Starts a counting server for protocol; returns
  -- {proc, port, endpoint, ledger, protocol} (in srv, if given).
  function C.start(protocol, srv)
    local ledger = os.tmpname()
    local proc = P.start { P.LUA, "spec/helpers/counting_server.lua",
                           protocol, 0, ledger }
    srv = srv or {}
    srv.proc, srv.port, srv.ledger = proc, proc.port, ledger
    srv.endpoint, srv.protocol = proc.endpoint, protocol
    return srv
  end

  --- C.serve(protocol) -> srv: called in a describe, a counting server
  -- for its cases, started at setup (srv is filled in then) and stopped at
  -- teardown, with the descriptors checked around each case.
  function C.serve(protocol)
    -- busted's functions are globals of spec files only: its module has them
    local busted = require "busted"
    local H = require "spec.helpers.util"
    local srv = {}
    busted.setup(function() C.start(protocol, srv) end)
    busted.teardown(function() C.stop(srv) end)
    busted.before_each(H.fd_watch)
    busted.after_each(H.cleanup_checking_fds)
    return srv
  end

  --- C.request(protocol, fields) -> the request pool:call takes for
  -- fields: their text joined by spaces (length), or the array (resp).
  function C.request(protocol, fields)
    if protocol == "length" then return table.concat(fields, " ") end
    return fields
  end

  --- What the ledger holds: {received = id->n, executed = id->n,
  -- total_received, total_executed}.
  function C.read(srv)
    local r = { received = {}, executed = {}, total_received = 0,
                total_executed = 0 }
    local f = io.open(srv.ledger)
    if not f then return r end
    for line in f:lines() do
      local kind, id = line:match("^(%u) (.+)$")
      if kind == "R" then
        r.received[id] = (r.received[id] or 0) + 1
        r.total_received = r.total_received + 1
      elseif kind == "E" then
        r.executed[id] = (r.executed[id] or 0) + 1
        r.total_executed = r.total_executed + 1
      end
    end
    f:close()
    return r
  end

  --- The barrier: returns once the server has no client connection open
  -- but this one, so every byte the closed pools wrote has been read and
  -- acted on. Blocks this process (call it with the pools closed).
  function C.sync(srv)
    local c = assert(socket.tcp())
    c:settimeout(8)
    assert(c:connect("127.0.0.1", srv.port))
    assert(c:send(encode_request(srv.protocol, { "sync", "-", "0" })))
    local reply
    if srv.protocol == "length" then
      local head = assert(c:receive(4))
      reply = assert(c:receive(read_u32(head)))
    else
      local head = assert(c:receive("*l"))
      reply = assert(c:receive(tonumber(head:match("^%$(%d+)"))))
    end
    c:close()
    assert(reply == "synced", "counting server did not settle: " .. reply)
  end

  function C.stop(srv)
    srv.proc:close()
    os.remove(srv.ledger)
  end

  return C
end

---------------------------------------------------------------------------
-- The server process.

local protocol, port, path = arg[1], tonumber(arg[2]), arg[3]
assert(protocol == "length" or protocol == "resp", "protocol: length|resp")
local ledger = assert(io.open(path, "a"))
local listener = assert(socket.bind("127.0.0.1", port))
listener:settimeout(0)
local _, bound = listener:getsockname()
io.stdout:write("listening ", bound, "\n")
io.stdout:flush()

-- Replies leave each connection in request order, as from any pipelined
-- server: a delayed reply holds back the ones behind it.
local conns = {}     -- sock -> { buf, queue = { {at, data} }, out, sync_since }
local seen = {}      -- id -> requests received

local function record(kind, id)
  ledger:write(kind, " ", id, "\n")
  ledger:flush()
end

local function drop(sock, reset)
  if not conns[sock] then return end
  conns[sock] = nil
  if reset then sock:setoption("linger", { on = true, timeout = 0 }) end
  sock:close()
end

local function write(sock, data, at)
  local c = conns[sock]
  if c then c.queue[#c.queue + 1] = { at = at or 0, data = data } end
end

local function open_count()
  local n = 0
  for _ in pairs(conns) do n = n + 1 end
  return n
end

-- Acts on one complete request.
local function serve(sock, fields)
  local mode, id = fields[1], fields[2]
  if mode == "PING" or mode == "ping" then
    write(sock, protocol == "resp" and "+PONG\r\n" or encode_reply(protocol, "pong"))
    return
  end
  if mode == "sync" then
    conns[sock].sync_since = socket.gettime()
    return
  end
  local n, ms = tonumber(fields[3] or "0") or 0, tonumber(fields[4] or "0") or 0
  seen[id] = (seen[id] or 0) + 1
  record("R", id)
  if mode ~= "ok" and seen[id] > n then mode = "ok" end
  local reply = encode_reply(protocol, "done " .. id)
  if mode == "rst_before" or mode == "rst_read" then
    drop(sock, true)
  elseif mode == "rst_exec" then
    record("E", id)
    drop(sock, true)
  elseif mode == "half" then
    record("E", id)
    -- Blocking write of half the frame, then a FIN.
    sock:settimeout(1)
    sock:send(reply:sub(1, math.floor(#reply / 2)))
    drop(sock, false)
  elseif mode == "delay" then
    record("E", id)
    write(sock, reply, socket.gettime() + ms / 1000)
  elseif mode == "error" then
    record("E", id)
    write(sock, encode_reply(protocol, "ERR counted failure " .. id, true))
  else
    record("E", id)
    write(sock, reply)
  end
end

local function on_readable(sock)
  local c = conns[sock]
  -- One chunk of at most 8 KB per turn: a large request stays partly in
  -- the kernel, so rst_before resets with bytes unread.
  local data, err, partial = sock:receive(8192)
  data = data or partial
  if data and #data > 0 then c.buf = c.buf .. data end
  while conns[sock] and #c.buf > 0 do
    local fields, size = parse_request(protocol, c.buf)
    if not fields then
      local f = peek_fields(protocol, c.buf)
      if f[1] == "rst_before" and f[3] and
         (seen[f[2]] or 0) < (tonumber(f[3]) or 0) then
        seen[f[2]] = (seen[f[2]] or 0) + 1
        record("R", f[2])
        drop(sock, true)
      end
      break
    end
    c.buf = c.buf:sub(size + 1)
    serve(sock, fields) -- a whole small rst_before request: as rst_read
  end
  if conns[sock] and err == "closed" then drop(sock, false) end
end

while true do
  local now = socket.gettime()
  -- Sync barriers, then the replies that are due, in order.
  local wait = 0.05
  for sock, c in pairs(conns) do
    if c.sync_since then
      local others = open_count() - 1
      if others == 0 or now - c.sync_since > 5 then
        write(sock, encode_reply(protocol, others == 0 and "synced"
                                            or ("busy " .. others)))
        c.sync_since = nil
      else
        wait = math.min(wait, 0.005)
      end
    end
  end
  for _, c in pairs(conns) do
    while c.queue[1] and c.queue[1].at <= now do
      c.out = c.out .. table.remove(c.queue, 1).data
    end
    if c.queue[1] then wait = math.min(wait, c.queue[1].at - now) end
  end
  -- Pending output, written without blocking.
  local writers = {}
  for sock, c in pairs(conns) do
    if #c.out > 0 then
      local sent, err, last = sock:send(c.out)
      local done = sent or last or 0
      c.out = c.out:sub(done + 1)
      if err == "closed" then
        drop(sock, false)
      elseif #c.out > 0 then
        writers[#writers + 1] = sock
      end
    end
  end
  local readers = { listener }
  for sock in pairs(conns) do readers[#readers + 1] = sock end
  local readable = socket.select(readers, writers, math.max(wait, 0))
  for _, sock in ipairs(readable) do
    if sock == listener then
      local s = listener:accept()
      if s then
        s:settimeout(0)
        s:setoption("tcp-nodelay", true)
        conns[s] = { buf = "", out = "", queue = {} }
      end
    elseif conns[sock] then
      on_readable(sock)
    end
  end
end
