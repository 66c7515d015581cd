-- resilnet.server{protocol = "rnp"} on the wire: a raw client written with
-- LuaSocket (frames built and parsed here, byte by byte) checks what the
-- server sends: handshake, replies by id in any order, refusals that say
-- "not executed", GOAWAY, protocol errors, dedupe (memory, a Lua store,
-- the Redis store).
local resilnet = require "resilnet"
local socket = require "socket"
local H = require "spec.helpers.util"

local W = require "spec.helpers.rnp_raw_client"
local HELLO, REQUEST, REPLY, ERROR, PING, PONG, GOAWAY =
  W.HELLO, W.REQUEST, W.REPLY, W.ERROR, W.PING, W.PONG, W.GOAWAY
local F_VERSION, F_MAX_FRAME, F_MAX_CONCURRENT, F_INCARNATION =
  W.F_VERSION, W.F_MAX_FRAME, W.F_MAX_CONCURRENT, W.F_INCARNATION
local F_DEADLINE, F_KEY, F_RETRY_AFTER = W.F_DEADLINE, W.F_KEY, W.F_RETRY_AFTER
local APPLICATION, OVERLOADED, DEADLINE, PROTOCOL =
  W.APPLICATION, W.OVERLOADED, W.DEADLINE, W.PROTOCOL
local NOT_EXECUTED, IDEMPOTENT = W.NOT_EXECUTED, W.IDEMPOTENT
local u16, u32, u64, num, frame, parse, client =
  W.u16, W.u32, W.u64, W.num, W.frame, W.parse, W.client

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
      assert.equal(1024 * 1024, num(h.fields[F_MAX_FRAME], 1, 4))
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

  -- issue 15, defects 12-13: who is calling, and ids past 2^53 exactly
  it("gives the handler the peer's address and request ids exactly, "
     .. "past 2^53 too", function()
    local ctxs = {}
    local _, ep = server {
      handler = function(req, ctx) ctxs[req] = ctx return "ok" end,
    }
    H.go(function()
      local c = client(ep)
      c:hello()
      c:answer(c:request("small"))
      -- 2^53 + 1 and 2^64 - 1, written byte by byte (no float can)
      for _, case in ipairs { { "big", "\0\32\0\0\0\0\0\1" },
                              { "max", ("\255"):rep(8) } } do
        local f = frame(REQUEST, 0, 0, nil, case[1])
        c:send(f:sub(1, 8) .. case[2] .. f:sub(17))
      end
      c:wait_frames(4)
      local ip, port = c.sock:getsockname()
      assert.equal(ip .. ":" .. port, ctxs.small.peer)
      assert.equal(ctxs.small.peer, ctxs.max.peer)
    end)
    assert.equal("2", tostring(ctxs.small.id))
    assert.equal("number", type(ctxs.small.id))
    assert.equal("9007199254740993", tostring(ctxs.big.id))
    assert.equal("18446744073709551615", tostring(ctxs.max.id))
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

  it("dedupe store failures refuse claims as not executed, and release "
     .. "the failed claim", function()
    local released = {}
    local store = {
      claim = function() return nil, "store down" end,
      finish = function() return true end,
      release = function(_, key) released[#released + 1] = key return true end,
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
      -- issue 15, defect 11: a claim that failed half way is given back
      c:wait(function() return #released == 1 end, "the release")
      assert.same({ "k" }, released)
    end)
  end)

  -- issue 15, defect 10: a key flood evicted legitimate keys
  it("dedupe at capacity refuses new keys as not executed, keeps the old "
     .. "ones, with a dedupe_full event and stat", function()
    local ran = 0
    local srv, ep = server { dedupe = { window = 60, capacity = 1 },
                             retry_after = 0.03,
                             handler = function() ran = ran + 1 return "r" end }
    local full = {}
    srv:on("dedupe_full", function(ev) full[#full + 1] = ev end)
    H.go(function()
      local c = client(ep)
      c:hello()
      assert.equal("r", c:answer(c:request("x", { key = "mine" })).payload)
      local r = c:answer(c:request("x", { key = "flood" }))
      assert.same({ ERROR, OVERLOADED, NOT_EXECUTED, 30 },
                  { r.type, r.code, r.flags, r.retry_after })
      assert.equal("r", c:answer(c:request("x", { key = "mine" })).payload)
    end)
    assert.equal(1, ran)
    assert.equal(1, #full)
    assert.equal("ENOSPC", full[1].error)
    assert.equal(1, srv:stats().dedupe_full)
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
