-- resilnet.server{protocol = "rnp"} on the wire: a raw client written with
-- LuaSocket (frames built and parsed here, byte by byte) checks what the
-- server sends: handshake, replies by id in any order, refusals that say
-- "not executed", GOAWAY, protocol errors, dedupe (memory, a Lua store,
-- the Redis store).
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

local function server(opts)
  opts.protocol = "rnp"
  return H.server(opts)
end

describe("rnp server", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("answers HELLO with its limits and incarnation, PING with PONG",
     function()
    local _, ep = server { max_concurrent = 7 }
    local _, ep2 = server {}
    H.go(function()
      local c = client(ep)
      local h = c:hello()
      assert.equal(HELLO, h.type)
      assert.equal(1, h.id)
      assert.equal(1, num(h.fields[F_VERSION], 1, 2))
      assert.equal(16 * 1024 * 1024, num(h.fields[F_MAX_FRAME], 1, 4))
      assert.equal(7, num(h.fields[F_MAX_CONCURRENT], 1, 4))
      assert.equal(16, #h.fields[F_INCARNATION])
      c:send(frame(PING, 0, c:id(), nil, "ctx"))
      c:wait_frames(2)
      assert.same({ PONG, 2, "ctx" },
                  { c.frames[2].type, c.frames[2].id, c.frames[2].payload })
      -- another server process start: another incarnation
      local other = client(ep2):hello()
      assert.not_equal(h.fields[F_INCARNATION], other.fields[F_INCARNATION])
    end)
  end)

  it("runs handlers as tasks and replies by id as they finish, with the "
     .. "request's context", function()
    local ctxs = {}
    local _, ep = server {
      handler = function(req, ctx)
        ctxs[req] = ctx
        resilnet.sleep(tonumber(req:match("%d+")) / 1000)
        return "re:" .. req
      end,
    }
    H.go(function()
      local c = client(ep)
      c:hello()
      local slow = c:request("slow 60", { key = "k-1", deadline = 5000,
                                          idempotent = true })
      local fast = c:request("fast 1")
      c:wait_frames(3)
      -- the fast one answered first, each with its own id
      assert.same({ fast, "re:fast 1" }, { c.frames[2].id, c.frames[2].payload })
      assert.same({ slow, "re:slow 60" }, { c.frames[3].id, c.frames[3].payload })
      local ctx = ctxs["slow 60"]
      assert.equal(slow, ctx.id)
      assert.equal("k-1", ctx.key)
      assert.is_true(ctx.idempotent)
      assert.is_true(ctx.deadline > 4 and ctx.deadline <= 5)
      assert.is_nil(ctxs["fast 1"].deadline)
      assert.is_nil(ctxs["fast 1"].key)
      assert.is_false(ctxs["fast 1"].idempotent)
    end)
  end)

  it("turns a handler's error into an APPLICATION error; other values "
     .. "into strings", function()
    local _, ep = server {
      handler = function(req)
        if req == "raise" then error("it broke", 0) end
        if req == "nil,err" then return nil, "said no" end
        if req == "number" then return 42 end
      end,
    }
    H.go(function()
      local c = client(ep)
      c:hello()
      local e1 = c:answer(c:request("raise"))
      assert.same({ ERROR, APPLICATION, 0, "it broke" },
                  { e1.type, e1.code, e1.flags, e1.message })
      local e2 = c:answer(c:request("nil,err"))
      assert.equal("said no", e2.message)
      assert.equal("42", c:answer(c:request("number")).payload)
      assert.equal("", c:answer(c:request("nothing")).payload)
    end)
  end)

  it("refuses past max_concurrent and the queue: not executed, retry "
     .. "after, an overload event", function()
    local ran, release = 0, false
    local srv, ep = server {
      max_concurrent = 1, queue = 1, retry_after = 0.25,
      handler = function()
        ran = ran + 1
        -- bounded: a failed test must not leave a handler (and the
        -- server's close) waiting forever
        for _ = 1, 2500 do
          if release then break end
          resilnet.sleep(0.002)
        end
        return "done"
      end,
    }
    local events = {}
    srv:on("overload", function(ev) events[#events + 1] = ev end)
    H.go(function()
      local c = client(ep)
      c:hello()
      local a, b, x = c:request("a"), c:request("b"), c:request("c")
      local refused = c:answer(x)
      assert.same({ ERROR, OVERLOADED, NOT_EXECUTED, 250 },
                  { refused.type, refused.code, refused.flags,
                    refused.retry_after })
      assert.equal(1, #events)
      assert.equal(x, events[1].id)
      assert.equal(1, ran)
      release = true
      assert.equal(REPLY, c:answer(a).type)
      assert.equal(REPLY, c:answer(b).type)
      assert.equal(2, ran)
      assert.equal(1, srv:stats().overloaded)
    end)
  end)

  it("never runs a request whose deadline passed", function()
    local ran = 0
    local srv, ep = server { handler = function() ran = ran + 1 end }
    local events = 0
    srv:on("deadline", function() events = events + 1 end)
    H.go(function()
      local c = client(ep)
      c:hello()
      local r = c:answer(c:request("late", { deadline = 0 }))
      assert.same({ ERROR, DEADLINE, NOT_EXECUTED },
                  { r.type, r.code, r.flags })
      assert.equal(0, ran)
      assert.equal(1, events)
    end)
  end)

  it("closes a connection that breaks the protocol, and only that one",
     function()
    local srv, ep = server {}
    local events = {}
    srv:on("protocol", function(ev) events[#events + 1] = ev end)
    H.go(function()
      local good = client(ep)
      good:hello()
      local bad = client(ep)
      bad:send(frame(REQUEST, 0, 1, nil, "no hello"))
      bad:wait_closed()
      assert.same({ ERROR, 0, PROTOCOL }, { bad.frames[1].type,
                   bad.frames[1].id, bad.frames[1].code })
      local bad2 = client(ep)
      bad2:hello()
      bad2:send("\0\0\0\12\99garbage garbage")
      bad2:wait_closed()
      assert.equal(PROTOCOL, bad2.frames[2].code)
      assert.equal(2, #events)
      assert.equal("EBADFRAME", events[2].error)
      assert.equal("still", good:answer(good:request("still")).payload)
    end)
  end)

  it("close{goaway}: GOAWAY with the last id, later requests discarded, "
     .. "accepted ones finished", function()
    local release = false
    local srv, ep = server {
      handler = function(req)
        -- bounded: a failed test must not leave a handler (and the
        -- server's close) waiting forever
        for _ = 1, 2500 do
          if release then break end
          resilnet.sleep(0.002)
        end
        return req
      end,
    }
    local goaways = {}
    srv:on("goaway", function(ev) goaways[#goaways + 1] = ev.id end)
    local closed = false
    H.go(function()
      local c = client(ep)
      c:hello()
      local a = c:request("a")
      local b = c:request("b")
      c:wait(function() return srv:stats().handled == 2 end, "handlers")
      resilnet.spawn(function()
        srv:close { goaway = true, drain = 5 }
        closed = true
      end)
      c:wait_frames(2)
      assert.same({ GOAWAY, b }, { c.frames[2].type, c.frames[2].id })
      local late = c:request("late")
      release = true
      c:wait_closed()
      assert.equal("a", c:reply_to(a).payload)
      assert.equal("b", c:reply_to(b).payload)
      assert.is_nil(c:reply_to(late))
      assert.same({ b }, goaways)
      c:close()
      for _ = 1, 500 do
        if closed then break end
        resilnet.sleep(0.002)
      end
      assert.is_true(closed)
      local refused = socket.connect("127.0.0.1", tonumber(ep:match("%d+$")))
      assert.is_nil(refused)
    end)
  end)

  it("dedupe: a duplicate waits for the original, a finished one is "
     .. "replayed without running", function()
    local ran = 0
    local _, ep = server {
      dedupe = { window = 60, capacity = 10 },
      handler = function(req)
        ran = ran + 1
        resilnet.sleep(0.03)
        return "did " .. req .. " #" .. ran
      end,
    }
    H.go(function()
      local a, b = client(ep), client(ep)
      a:hello()
      b:hello()
      local ia = a:request("pay", { key = "order-1" })
      local ib = b:request("pay", { key = "order-1" })
      assert.equal("did pay #1", a:answer(ia).payload)
      assert.equal("did pay #1", b:answer(ib).payload)
      assert.equal("did pay #1",
                   a:answer(a:request("pay", { key = "order-1" })).payload)
      assert.equal("did pay #2",
                   a:answer(a:request("pay", { key = "order-2" })).payload)
      assert.equal(2, ran)
    end)
  end)

  it("dedupe with a Lua store: the same logic, the store's methods run "
     .. "as tasks", function()
    local calls = {}
    local data = {}
    local store = {}
    function store:claim(key)
      calls[#calls + 1] = "claim " .. key
      resilnet.sleep(0.005) -- a store may wait (I/O)
      local v = data[key]
      if v == nil then data[key] = "running"; return "new" end
      if v == "running" then return "busy" end
      return "done", v.reply, v.failed
    end
    function store:finish(key, reply, failed)
      calls[#calls + 1] = "finish " .. key
      data[key] = { reply = reply, failed = failed }
      return true
    end
    function store:release(key)
      data[key] = nil
      return true
    end
    local ran = 0
    local _, ep = server {
      dedupe = { store = store },
      handler = function(req)
        ran = ran + 1
        if req == "fail" then error("bad input", 0) end
        return req .. ran
      end,
    }
    H.go(function()
      local c = client(ep)
      c:hello()
      assert.equal("x1", c:answer(c:request("x", { key = "k" })).payload)
      c:wait(function() return data.k and data.k.reply end, "finish")
      assert.equal("x1", c:answer(c:request("x", { key = "k" })).payload)
      local e = c:answer(c:request("fail", { key = "f" }))
      assert.equal(APPLICATION, e.code)
      c:wait(function() return data.f and data.f.failed end, "finish")
      local again = c:answer(c:request("fail", { key = "f" }))
      assert.same({ APPLICATION, "bad input" }, { again.code, again.message })
      assert.equal(2, ran)
      -- another process holds the key: IN_PROGRESS, maybe executed
      data.elsewhere = "running"
      local busy = c:answer(c:request("x", { key = "elsewhere" }))
      assert.same({ ERROR, 6, 0 }, { busy.type, busy.code, busy.flags })
      assert.same({ "claim k", "finish k", "claim k", "claim f", "finish f",
                    "claim f", "claim elsewhere" }, calls)
    end)
  end)

  it("dedupe store failures refuse claims as not executed", function()
    local store = {
      claim = function() return nil, "store down" end,
      finish = function() return true end,
      release = function() return true end,
    }
    local ran = 0
    local srv, ep = server { dedupe = { store = store },
                             handler = function() ran = ran + 1 end }
    local errs = 0
    srv:on("store", function() errs = errs + 1 end)
    H.go(function()
      local c = client(ep)
      c:hello()
      local r = c:answer(c:request("x", { key = "k" }))
      assert.same({ OVERLOADED, NOT_EXECUTED }, { r.code, r.flags })
      assert.equal(0, ran)
      assert.equal(1, errs)
    end)
  end)

  it("validates rnp options", function()
    local h = function() end
    local function err_of(opts)
      local ok, err = pcall(resilnet.server, opts)
      assert.is_false(ok)
      return err
    end
    assert.matches("option 'queue' applies only to protocol 'rnp'",
                   err_of { listen = "127.0.0.1:0", handler = h, queue = 1 })
    assert.matches("option 'dedupe.store' must be a table with claim",
                   err_of { listen = "127.0.0.1:0", handler = h,
                            protocol = "rnp", dedupe = { store = {} } })
    assert.matches("dedupe' applies only to protocol 'rnp'",
                   err_of { listen = "127.0.0.1:0", handler = h,
                            dedupe = {} })
    local srv = H.server { protocol = "rnp" }
    assert.matches("unknown event 'overlaod'",
                   select(2, pcall(srv.on, srv, "overlaod", h)))
  end)
end)

describe("rnp server with the Redis dedupe store", function()
  local R = require "spec.helpers.redis"
  local redis, why

  setup(function() redis, why = R.start() end)
  teardown(function() if redis then R.stop(redis) end end)
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("replays a finished key from another server process's record",
     function()
    assert(redis, why)
    local store_mod = require "resilnet.dedupe_redis"
    local ran = 0
    local function handler(req)
      ran = ran + 1
      return "charged " .. req
    end
    H.go(function()
      local pool = H.pool { endpoints = { redis.endpoint } }
      local prefix = "spec:" .. math.random(1, 1e9) .. ":"
      local opts = function()
        return { protocol = "rnp", handler = handler,
                 dedupe = { window = 30,
                            store = store_mod.new(pool, { prefix = prefix }) } }
      end
      local first, ep1 = H.server(opts())
      local c = client(ep1)
      c:hello()
      assert.equal("charged 50", c:answer(c:request("50", { key = "pay-1" })).payload)
      -- the record is in Redis once the store's finish ran
      c:wait(function()
        local v = pool:call { "GET", prefix .. "pay-1" }
        return v == "Rcharged 50"
      end, "the record")
      c:close()
      first:close()
      -- a new server (as after a crash) replays instead of running
      local _, ep2 = H.server(opts())
      local d = client(ep2)
      d:hello()
      assert.equal("charged 50", d:answer(d:request("50", { key = "pay-1" })).payload)
      assert.equal(1, ran)
      -- a claim left by a server that died stays "in progress"
      pool:call { "SET", prefix .. "pay-2", "Pdead:1", "PX", 30000 }
      local busy = d:answer(d:request("50", { key = "pay-2" }))
      assert.equal(6, busy.code)
      assert.equal(1, ran)
      d:close()
    end)
  end)
end)
