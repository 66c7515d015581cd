-- A raw rnp client for the specs, written with LuaSocket: frames built
-- and parsed here byte by byte, independently of resilnet's C codec, so
-- the specs check what a server really sends.
local resilnet = require "resilnet"
local socket = require "socket"
local H = require "spec.helpers.util"

local HELLO, REQUEST, REPLY, ERROR, PING, PONG, GOAWAY = 1, 2, 3, 4, 5, 6, 7
local F_VERSION, F_MAX_FRAME, F_MAX_CONCURRENT, F_INCARNATION = 1, 2, 3, 4
local F_DEADLINE, F_KEY, F_RETRY_AFTER = 5, 6, 7
local APPLICATION, OVERLOADED, DEADLINE, PROTOCOL = 1, 2, 3, 7
local NOT_EXECUTED, IDEMPOTENT = 1, 1

-- Big-endian integers without string.pack (Lua 5.1 and LuaJIT too).
local function u16(n) return string.char(math.floor(n / 256) % 256, n % 256) end
local function u32(n)
  return u16(math.floor(n / 65536) % 65536) .. u16(n % 65536)
end
local function u64(n) return u32(math.floor(n / 4294967296)) .. u32(n % 4294967296) end
local function num(s, i, n)
  local v = 0
  for k = i, i + n - 1 do v = v * 256 + s:byte(k) end
  return v
end

local function frame(ftype, flags, id, fields, payload)
  local f = {}
  for _, fv in ipairs(fields or {}) do
    f[#f + 1] = string.char(fv[1], #fv[2]) .. fv[2]
  end
  local fs = table.concat(f)
  payload = payload or ""
  return u32(12 + #fs + #payload) .. string.char(ftype, flags)
    .. u16(#fs) .. u64(id) .. fs .. payload
end

-- One parsed frame from s, or nil when incomplete: {type, flags, id,
-- fields = {tag = raw}, payload, code, message}.
local function parse(s)
  if #s < 16 then return nil end
  local size = num(s, 1, 4)
  if #s < 4 + size then return nil end
  local fr = { type = s:byte(5), flags = s:byte(6), id = num(s, 9, 8),
               fields = {} }
  local flen, i = num(s, 7, 2), 17
  while i < 17 + flen do
    local tag, len = s:byte(i), s:byte(i + 1)
    fr.fields[tag] = s:sub(i + 2, i + 1 + len)
    i = i + 2 + len
  end
  fr.payload = s:sub(17 + flen, 4 + size)
  if fr.type == ERROR then
    fr.code = num(fr.payload, 1, 2)
    fr.message = fr.payload:sub(3)
  end
  if fr.fields[F_RETRY_AFTER] then
    fr.retry_after = num(fr.fields[F_RETRY_AFTER], 1, 4)
  end
  return fr, s:sub(5 + size)
end

-- A client driven from a task: LuaSocket never blocks here (timeout 0);
-- waiting polls and sleeps so the server in this process runs meanwhile.
local Client = {}
Client.__index = Client

local function client(endpoint)
  local host, port = endpoint:match("^(.*):(%d+)$")
  local sock = assert(socket.connect(host, tonumber(port)))
  sock:setoption("tcp-nodelay", true)
  sock:settimeout(0)
  return H.track(setmetatable({ sock = sock, buf = "", frames = {},
                                next_id = 1 }, Client))
end

function Client:send(data)
  local i = 1
  for _ = 1, 1000 do
    local n, err, last = self.sock:send(data, i)
    if n then return end
    if err ~= "timeout" then error("send: " .. err) end
    i = last + 1
    resilnet.sleep(0.002)
  end
  error("send: stuck")
end

function Client:pump()
  local data, err, partial = self.sock:receive(65536)
  data = data or partial
  if data and #data > 0 then
    self.buf = self.buf .. data
    while true do
      local fr, rest = parse(self.buf)
      if not fr then break end
      self.frames[#self.frames + 1] = fr
      self.buf = rest
    end
  end
  if err == "closed" then self.closed = true end
end

function Client:wait(pred, what)
  for _ = 1, 2500 do -- 5 s at most
    self:pump()
    if pred() then return end
    resilnet.sleep(0.002)
  end
  error("timed out waiting for " .. what, 2)
end

function Client:wait_frames(n)
  self:wait(function() return #self.frames >= n end, n .. " frames")
end

function Client:wait_closed()
  self:wait(function() return self.closed end, "the server to close")
end

function Client:reply_to(id)
  for _, fr in ipairs(self.frames) do
    if fr.id == id and fr.type ~= GOAWAY then return fr end
  end
end

function Client:id()
  local id = self.next_id
  self.next_id = id + 1
  return id
end

function Client:hello()
  self:send(frame(HELLO, 0, self:id(), { { F_VERSION, u16(1) },
                                         { F_MAX_FRAME, u32(1048576) } }))
  self:wait_frames(1)
  return self.frames[1]
end

-- opts: key, deadline (ms), idempotent. Returns the request's id.
function Client:request(body, opts)
  opts = opts or {}
  local fields = {}
  if opts.deadline then fields[#fields + 1] = { F_DEADLINE, u32(opts.deadline) } end
  if opts.key then fields[#fields + 1] = { F_KEY, opts.key } end
  local id = self:id()
  self:send(frame(REQUEST, opts.idempotent and IDEMPOTENT or 0, id, fields,
                  body))
  return id
end

-- Waits for the answer to id.
function Client:answer(id)
  self:wait(function() return self:reply_to(id) ~= nil end, "reply " .. id)
  return self:reply_to(id)
end

function Client:close()
  if self.sock then self.sock:close(); self.sock = nil end
end

return {
  HELLO = HELLO, REQUEST = REQUEST, REPLY = REPLY, ERROR = ERROR,
  PING = PING, PONG = PONG, GOAWAY = GOAWAY,
  F_VERSION = F_VERSION, F_MAX_FRAME = F_MAX_FRAME,
  F_MAX_CONCURRENT = F_MAX_CONCURRENT, F_INCARNATION = F_INCARNATION,
  F_DEADLINE = F_DEADLINE, F_KEY = F_KEY, F_RETRY_AFTER = F_RETRY_AFTER,
  APPLICATION = APPLICATION, OVERLOADED = OVERLOADED, DEADLINE = DEADLINE,
  PROTOCOL = PROTOCOL, NOT_EXECUTED = NOT_EXECUTED, IDEMPOTENT = IDEMPOTENT,
  u16 = u16, u32 = u32, u64 = u64, num = num, frame = frame, parse = parse,
  client = client,
}
