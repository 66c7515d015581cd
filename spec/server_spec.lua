-- resilnet.server: options, addresses, handlers as tasks, closing.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

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
    local replies = {}
    H.go(function()
      local left = 20
      for i = 1, 20 do
        resilnet.spawn(function()
          replies[i] = pool:call("r" .. i)
          left = left - 1
        end)
      end
      while left > 0 do resilnet.sleep(0.001) end
    end)
    for i = 1, 20 do assert.equal("R" .. i, replies[i]) end
    assert.equal(srv, seen_ctx.server)
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
    local srv = H.server { protocol = "resp" }
    assert.equal(120, srv.options.idle_timeout)
    assert.equal(10, srv.options.frame_timeout)
    assert.equal(1024 * 1024, srv.options.max_frame)
    assert.equal(65536, srv.options.max_elements)
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
end)
