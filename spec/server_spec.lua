-- resilnet.server: options, addresses, handlers as tasks, closing.
local resilnet = require "resilnet"
local socket = require "socket"
local H = require "spec.helpers.util"

-- A raw text client from a task (LuaSocket at timeout 0, polling): sends
-- bytes, then reads until `want` bytes came or the server closed. Returns
-- what came, whether it closed, and the client's own "ip:port".
local function raw_exchange(ep, data, want)
  local host, port = ep:match("^(.*):(%d+)$")
  local sock = assert(socket.connect(host, tonumber(port)))
  H.track(sock)
  local ip, local_port = sock:getsockname()
  sock:settimeout(0)
  assert(sock:send(data))
  local got, closed = "", false
  for _ = 1, 2500 do -- 5 s at most
    local chunk, err, partial = sock:receive(65536)
    got = got .. (chunk or partial or "")
    if err == "closed" then closed = true break end
    if want and #got >= want then break end
    resilnet.sleep(0.002)
  end
  sock:close()
  return got, closed, ip .. ":" .. local_port
end

describe("server", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("listens on a free loopback port and reports it", function()
    local srv = H.track(assert(resilnet.server {
      listen = "127.0.0.1:0", protocol = "line",
      handler = function(r) return r end,
    }))
    local host, port = srv:address()
    assert.equal("127.0.0.1", host)
    assert.is_true(port > 0)
  end)

  it("returns nil, err when the address is taken", function()
    local _, ep = H.server { protocol = "line" }
    local srv, err = resilnet.server { listen = ep, protocol = "line",
                                       handler = function() end }
    assert.is_nil(srv)
    assert.equal("EADDRINUSE", err.code)
    assert.equal(ep, err.endpoint)
  end)

  it("validates its options", function()
    local function err_of(opts)
      local ok, err = pcall(resilnet.server, opts)
      assert.is_false(ok)
      return err
    end
    local h = function() end
    assert.matches("resilnet.server: unknown option 'lisen'",
                   err_of { lisen = "127.0.0.1:0", handler = h })
    assert.matches("option 'handler' is required",
                   err_of { listen = "127.0.0.1:0" })
    assert.matches("option 'handler' must be a function",
                   err_of { listen = "127.0.0.1:0", handler = "h" })
    assert.matches("option 'dedupe.window' must be a number > 0",
                   err_of { listen = "127.0.0.1:0", handler = h,
                            dedupe = { window = 0 } })
    assert.matches("bad listen address 'nowhere'",
                   err_of { listen = "nowhere", handler = h })
    assert.matches("server:close: unknown option 'drian'", select(2, pcall(
      function()
        local srv = H.server { protocol = "line" }
        srv:close { drian = 1 }
      end)))
  end)

  it("runs each request as a task that may wait, with a context",
     function()
    local seen_ctx
    local srv, ep = H.server {
      protocol = "line",
      handler = function(req, ctx)
        seen_ctx = ctx
        resilnet.sleep(0.01)
        return req:upper()
      end,
    }
    local pool = H.pool { endpoints = { ep }, protocol = "line", size = 4 }
    local replies = H.calls_at_once(pool, 20)
    for i = 1, 20 do assert.equal("R" .. i, replies[i]) end
    assert.equal(srv, seen_ctx.server)
  end)

  -- issue 15, defect 12: the handler did not know who was calling
  it("gives every protocol's handler the peer's address in ctx.peer",
     function()
    local seen = {}
    local _, ep = H.server {
      protocol = "resp",
      handler = function(req, ctx) seen[#seen + 1] = ctx.peer return "x" end,
    }
    local _, lep = H.server {
      protocol = "line",
      handler = function(_, ctx) return ctx.peer end,
    }
    H.go(function()
      local got, _, me = raw_exchange(ep, "*1\r\n$3\r\nGET\r\n", 7)
      assert.equal("$1\r\nx\r\n", got)
      assert.equal(me, seen[1])
    end)
    local pool = H.pool { endpoints = { lep }, protocol = "line" }
    assert.matches("^127%.0%.0%.1:%d+$", pool:call("who"))
  end)

  it("stringifies line and length replies", function()
    local _, ep = H.server {
      protocol = "length",
      handler = function(req)
        if req == "num" then return 42 end
        if req == "nil" then return nil end
        return true
      end,
    }
    local pool = H.pool { endpoints = { ep }, protocol = "length" }
    assert.equal("42", pool:call("num"))
    assert.equal("", pool:call("nil"))
    assert.equal("true", pool:call("bool"))
  end)

  it("raises instead of hanging when a wait can never complete",
     function()
    local parked = {}
    local srv, ep = H.server {
      protocol = "line",
      handler = function()
        parked[1] = coroutine.running()
        coroutine.yield() -- nothing will ever resume this handler
      end,
    }
    local pool = H.pool { endpoints = { ep }, protocol = "line" }
    local _, err = pool:call("x", { timeout = 0.05 })
    assert.equal("ETIMEDOUT", err.code)
    pool:close()
    -- the server waits for its unanswered request: nothing else can run
    local ok, why = pcall(srv.close, srv)
    assert.is_false(ok)
    assert.matches("server:close cannot complete: the loop has nothing "
                   .. "left to run", why)
    -- once the abandoned handler is garbage, its request is dropped and
    -- the close completes
    parked[1] = nil
    collectgarbage()
    collectgarbage()
    assert.is_true(srv:close())
  end)

  -- Reads what a LuaSocket client got until the server closed it, waiting
  -- in the task (the server runs meanwhile); nil if not closed in time.
  local function read_until_closed(c, seconds)
    local got, deadline = {}, resilnet.now() + seconds
    c:settimeout(0)
    while resilnet.now() < deadline do
      local data, err, partial = c:receive(4096)
      got[#got + 1] = data or partial
      if err == "closed" then return table.concat(got) end
      resilnet.sleep(0.01)
    end
  end

  it("refuses past max_connections and a frame past frame_timeout, with "
     .. "events and stats", function()
    local socket = require "socket"
    local srv, ep = H.server {
      protocol = "resp", max_connections = 1, frame_timeout = 0.1,
      handler = function(req) return req[2] end,
    }
    local events = {}
    for _, name in ipairs { "max_connections", "frame_timeout" } do
      srv:on(name, function(ev) events[#events + 1] = ev.type end)
    end
    local host, port = ep:match("^(.*):(%d+)$")
    H.go(function()
      local first = assert(socket.connect(host, tonumber(port)))
      first:send("*1\r\n$10\r\nab") -- and never the rest
      resilnet.sleep(0.02)
      local second = assert(socket.connect(host, tonumber(port)))
      assert.matches("^%-ERR max number of clients reached",
                     read_until_closed(second, 2))
      assert.matches("^%-ERR the request took longer than frame_timeout",
                     read_until_closed(first, 2))
      first:close()
      second:close()
    end)
    assert.same({ "max_connections", "frame_timeout" }, events)
    local st = srv:stats()
    assert.equal(1, st.connections_refused)
    assert.equal(1, st.frame_timeouts)
    assert.equal(0, st.buffered_in)
  end)

  it("validates its limits", function()
    local h = function() end
    local function err_of(opts)
      opts.listen, opts.handler = "127.0.0.1:0", h
      local ok, err = pcall(resilnet.server, opts)
      assert.is_false(ok)
      return err
    end
    assert.matches("option 'max_elements' applies only to protocol 'resp'",
                   err_of { protocol = "line", max_elements = 10 })
    assert.matches("option 'frame_timeout' must be",
                   err_of { frame_timeout = -1 })
    assert.matches("option 'input_budget' must be",
                   err_of { input_budget = 0 })
    assert.matches("option 'max_pipeline' must be",
                   err_of { max_pipeline = 0 })
    assert.matches("option 'write_timeout' must be",
                   err_of { write_timeout = -1 })
    local srv = H.server { protocol = "resp" }
    assert.equal(120, srv.options.idle_timeout)
    assert.equal(10, srv.options.frame_timeout)
    assert.equal(1024 * 1024, srv.options.max_frame)
    assert.equal(65536, srv.options.max_elements)
    assert.equal(128, srv.options.max_pipeline)
    assert.equal(30, srv.options.write_timeout)
  end)

  -- Review finding 2: a client that never reads was kept for good (a
  -- write in flight counted as activity for idle_timeout).
  it("closes a client whose socket takes no byte for write_timeout, with "
     .. "an event and a stat", function()
    local socket = require "socket"
    local big = ("x"):rep(256 * 1024)
    local srv, ep = H.server {
      protocol = "resp", write_timeout = 0.2,
      handler = function() return big end,
    }
    local events = 0
    srv:on("write_timeout", function() events = events + 1 end)
    local host, port = ep:match("^(.*):(%d+)$")
    H.go(function()
      local c = assert(socket.connect(host, tonumber(port)))
      c:settimeout(2)
      assert(c:send(("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"):rep(64)))
      for _ = 1, 300 do -- reads nothing meanwhile
        if events > 0 then break end
        resilnet.sleep(0.01)
      end
      c:close()
    end)
    assert.equal(1, events)
    assert.equal(1, srv:stats().write_timeouts)
    assert.equal(0, srv:stats().buffered_out)
  end)

  it("closes and waits, from a task or outside one", function()
    local a = H.server { protocol = "line" }
    local b = H.server { protocol = "line" }
    assert.is_true(a:close())
    H.go(function() assert.is_true(b:close()) end)
    assert.is_true(b:close()) -- closing twice is fine
    local _, err = a:address()
    assert.equal("ECLOSED", err.code)
    resilnet.run() -- nothing keeps the loop alive any more
  end)

  -- issue 15, defect 7: a malformed frame closed the connection silently
  it("answers a malformed resp request with Redis's protocol error after "
     .. "the replies before it, counts it and fires the protocol event",
     function()
    local events = {}
    local srv, ep = H.server {
      protocol = "resp",
      handler = function(req) return req[2] end,
    }
    srv:on("protocol", function(ev) events[#events + 1] = ev end)
    H.go(function()
      local got, closed = raw_exchange(ep,
        "*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*1\r\n$x\r\n*1\r\n$4\r\nPING\r\n")
      assert.equal("$2\r\nhi\r\n-ERR Protocol error: invalid multibulk "
                   .. "request\r\n", got)
      assert.is_true(closed)
    end)
    assert.equal(1, srv:stats().protocol_errors)
    assert.equal(1, #events)
    assert.equal("EBADFRAME", events[1].error)
  end)

  -- issue 15, defect 8: integers, maps and nested arrays reached the handler
  it("passes only arrays of bulk strings to a resp handler; anything else "
     .. "is a protocol error", function()
    local calls = 0
    local srv, ep = H.server {
      protocol = "resp",
      handler = function() calls = calls + 1 return "OK" end,
    }
    local cases = {
      { "*2\r\n$3\r\nGET\r\n:5\r\n", "expected '$', got ':'" },
      { "*2\r\n$3\r\nGET\r\n*1\r\n$1\r\nx\r\n", "expected '$', got '*'" },
      { "*1\r\n%1\r\n+a\r\n+b\r\n", "expected '$', got '%'" },
      { "*2\r\n$3\r\nGET\r\n$-1\r\n", "invalid bulk length" },
      { "*1\r\n+GET\r\n", "expected '$', got '+'" },
    }
    H.go(function()
      for _, case in ipairs(cases) do
        local got, closed = raw_exchange(ep, case[1])
        assert.equal("-ERR Protocol error: " .. case[2] .. "\r\n", got)
        assert.is_true(closed)
      end
    end)
    assert.equal(0, calls)
    assert.equal(#cases, srv:stats().protocol_errors)
  end)

  -- issue 15, defect 7: PING\r\n (telnet, redis-benchmark's PING_INLINE)
  it("accepts Redis's inline commands on resp, quotes included",
     function()
    local seen = {}
    local _, ep = H.server {
      protocol = "resp",
      handler = function(req) seen[#seen + 1] = req return #req end,
    }
    H.go(function()
      local want = "+PONG\r\n:3\r\n:2\r\n+PONG\r\n+PONG\r\n"
      local got = raw_exchange(ep, "PING\r\n\r\nSET k \"a b\\x41\\n\"\n"
                               .. "  echo 'it\\'s' \r\n*1\r\n$4\r\nPING\r\n"
                               .. "ping\r\n", #want)
      assert.equal(want, got)
      local bad, closed = raw_exchange(ep, "SET \"k v\r\n")
      assert.equal("-ERR Protocol error: unbalanced quotes in request\r\n",
                   bad)
      assert.is_true(closed)
      local big, closed2 = raw_exchange(ep, ("x"):rep(70000))
      assert.equal("-ERR Protocol error: too big inline request\r\n", big)
      assert.is_true(closed2)
    end)
    assert.same({ "SET", "k", "a bA\n" }, seen[1])
    assert.same({ "echo", "it's" }, seen[2])
  end)

  it("counts line and length framing errors and fires the protocol event",
     function()
    for _, protocol in ipairs { "line", "length" } do
      local events = 0
      local srv, ep = H.server {
        protocol = protocol, max_frame = 64,
        handler = function(r) return r end,
      }
      srv:on("protocol", function() events = events + 1 end)
      local data = protocol == "line" and ("x"):rep(200) .. "\n"
                   or "\0\0\4\0" .. ("x"):rep(100)
      H.go(function()
        local got, closed = raw_exchange(ep, data)
        assert.equal("", got)
        assert.is_true(closed)
      end)
      assert.equal(1, srv:stats().protocol_errors)
      assert.equal(1, events)
    end
  end)

  -- issue 15, defect 7: the real Redis benchmark, PING_INLINE included
  it("serves redis-benchmark with no errors", function()
    local probe = io.popen("command -v redis-benchmark")
    local path = probe:read("*l")
    probe:close()
    if not path then
      pending("redis-benchmark is not installed")
      return
    end
    local store = {}
    local srv, ep = H.server {
      protocol = "resp", max_concurrent = 1024,
      handler = function(req)
        local cmd = req[1]:upper()
        if cmd == "SET" then store[req[2]] = req[3] return "OK" end
        if cmd == "GET" then return store[req[2]] or resilnet.null end
        if cmd == "INCR" then
          local v = (tonumber(store[req[2]]) or 0) + 1
          store[req[2]] = tostring(v)
          return v
        end
        if cmd == "LPUSH" then return 1 end
        if cmd == "CONFIG" then return {} end
        return nil, "unknown command"
      end,
    }
    local port = ep:match(":(%d+)$")
    local out_file = os.tmpname()
    local p = resilnet.process { "sh", "-c",
      "redis-benchmark -p " .. port .. " -t ping,set,get,incr,lpush "
      .. "-c 50 -P 16 -n 20000 --csv > " .. out_file .. " 2>&1" }
    local status
    H.go(function() status = p:wait() end, 60)
    local f = io.open(out_file)
    local out = f:read("*a")
    f:close()
    os.remove(out_file)
    assert.equal(0, status, out)
    for _, test in ipairs { "PING_INLINE", "PING_MBULK", "SET", "GET",
                            "INCR", "LPUSH" } do
      assert.matches('"' .. test .. '","[%d.]+"', out)
    end
    assert.not_matches("[Ee]rror", out)
    assert.equal(0, srv:stats().protocol_errors)
  end)
end)
