-- Recovery scenarios against real server processes and real faults:
-- calls in flight across a SIGKILL and restart (the retry rules decide,
-- and a ledger of executions written by the server proves them), scripted
-- discovery following a server to a new port, endpoint ejection, and the
-- abortive close.
local resilnet = require "resilnet"
local socket = require "socket"
local H = require "spec.helpers.util"
local unpack = table.unpack or unpack
local P = require "spec.helpers.process"

local function ledger_server(ledger, port)
  return P.server { handler = "ledger", ledger = ledger, port = port }
end

local function close(proc)
  if proc then proc:close() end
end

describe("recovery", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("calls in flight across SIGKILL and restart: idempotent calls succeed, "
     .. "others never run twice", function()
    local ledger = os.tmpname()
    local server = ledger_server(ledger)
    local restarted
    local ok, err = pcall(function()
      -- Each retry spends a token and none is made at or below half: 20
      -- idempotent calls lost at once need a budget above 40 tokens.
      local pool = H.pool { endpoints = { "127.0.0.1:" .. server.port },
                            size = 4, timeout = 8,
                            reconnect = { initial = 0.05, max = 0.2 },
                            retry = { budget = { tokens = 50 } } }
      local retries = 0
      pool:on("retry", function(ev)
        retries = retries + 1
        assert.equal(2, ev.attempt)
        assert.is_true(ev.delay >= 0 and ev.delay <= 1)
      end)
      assert.equal("warm", pool:call { "EXEC", "warm", 0 })

      local N = 20
      local results = {}
      for i = 1, N do
        for _, kind in ipairs { "idem", "once" } do
          local id = kind .. i
          pool:send({ "EXEC", id, 300 }, { idempotent = kind == "idem" },
                    function(reply, e) results[id] = { reply, e } end)
        end
      end
      -- Every call reached the server (the ledger has it) before the kill.
      local deadline = resilnet.now() + 5
      repeat
        resilnet.sleep(0.01)
        local counts, n = P.read_ledger(ledger), 0
        for id in pairs(counts) do if id ~= "warm" then n = n + 1 end end
      until n == 2 * N or resilnet.now() > deadline
      server:kill("KILL")
      restarted = ledger_server(ledger, server.port)

      H.go(function()
        for _ = 1, 1000 do
          local n = 0
          for _ in pairs(results) do n = n + 1 end
          if n == 2 * N then return end
          resilnet.sleep(0.01)
        end
      end)

      local counts = P.read_ledger(ledger)
      for i = 1, N do
        local idem, once = results["idem" .. i], results["once" .. i]
        -- Idempotent: retried on the restarted server and answered.
        assert.equal("idem" .. i, idem[1], tostring(idem[2]))
        assert.is_true(counts["idem" .. i] >= 2)
        -- Not idempotent: sent, then the connection died: never retried.
        assert.is_nil(once[1])
        assert.is_true(once[2].maybe_executed)
        assert.equal(1, once[2].attempts)
        assert.equal(1, counts["once" .. i])
      end
      assert.equal(N, retries)
      assert.equal(N, pool:stats().retries)
    end)
    close(server)
    close(restarted)
    os.remove(ledger)
    if not ok then error(err, 0) end
  end)

  it("a call that never left is moved, whatever its kind, and runs once",
     function()
    -- The first connection is refused; the call waits unsent for the
    -- second endpoint to answer and runs there exactly once.
    local ledger = os.tmpname()
    local server = ledger_server(ledger)
    local ok, err = pcall(function()
      local pool = H.pool { endpoints = { H.refused_endpoint(),
                                          "127.0.0.1:" .. server.port },
                            timeout = 5 }
      for i = 1, 5 do
        local reply, e = pool:call { "EXEC", "u" .. i, 0 }
        assert.equal("u" .. i, reply, tostring(e))
      end
      local counts = P.read_ledger(ledger)
      for i = 1, 5 do assert.equal(1, counts["u" .. i]) end
    end)
    close(server)
    os.remove(ledger)
    if not ok then error(err, 0) end
  end)

  it("a scripted endpoints function follows the server to a new port",
     function()
    local server = P.server {}
    local moved
    local ok, err = pcall(function()
      local current = "127.0.0.1:" .. server.port
      local asked = 0
      local reasons = {}
      local pool = H.pool {
        endpoints = function()
          asked = asked + 1
          return { current }
        end,
        timeout = 5,
        reconnect = { initial = 0.05, max = 0.2 },
      }
      pool:on("resolve", function(ev) reasons[#reasons + 1] = ev.reason end)
      assert.equal(1, asked)
      assert.equal("a", pool:call { "ECHO", "a" })

      server:kill("KILL")
      moved = P.server {} -- any free port: a different one
      assert.are_not.equal(server.port, moved.port)
      current = "127.0.0.1:" .. moved.port

      for i = 1, 20 do
        local reply, e = pool:call { "ECHO", "b" .. i }
        assert.equal("b" .. i, reply, tostring(e))
      end
      assert.is_true(asked >= 2)
      assert.equal("connect_failure", reasons[1])
      local eps = pool:stats().endpoints
      assert.equal(1, #eps)
      assert.equal(current, eps[1].endpoint)
      assert.equal("ready", eps[1].state)
    end)
    close(server)
    close(moved)
    if not ok then error(err, 0) end
  end)

  it("calls the endpoints function again when the list is older than "
     .. "resolve_ttl", function()
    local _, ep = H.server { protocol = "line" }
    local asked = 0
    -- No jitter: a ttl run may otherwise start up to discovery_jitter
    -- (1 s) late, and this counts runs against the clock.
    local pool = H.pool { protocol = "line", resolve_ttl = 0.1,
                          discovery_jitter = 0,
                          endpoints = function()
                            asked = asked + 1
                            return { ep }
                          end }
    assert.equal("x", pool:call("x"))
    -- Housekeeping looks once a second.
    H.go(function()
      for _ = 1, 300 do
        if asked >= 3 then return end
        resilnet.sleep(0.01)
      end
    end)
    assert.is_true(asked >= 3)
  end)

  it("a discovery function returning garbage raises", function()
    local _, ep = H.server { protocol = "line" }
    assert.has_error(function()
      resilnet.pool { protocol = "line", endpoints = function() return 42 end }
    end)
    local ok = pcall(resilnet.pool, { protocol = "line",
                                      endpoints = function() return { ep } end })
    assert.is_true(ok)
    collectgarbage()
  end)

  it("pool:set_endpoints keeps shared endpoints' connections and drops "
     .. "the rest", function()
    local _, a = H.server { protocol = "line" }
    local _, b = H.server { protocol = "line" }
    local pool = H.pool { protocol = "line", endpoints = { a } }
    assert.equal("x", pool:call("x"))
    local closed = {}
    pool:on("state", function(ev)
      if ev.connection and ev.state == "closed" then
        closed[#closed + 1] = ev.reason
      end
    end)
    assert.is_true(pool:set_endpoints { a, b })
    assert.same({}, closed)
    assert.is_true(pool:set_endpoints { b })
    assert.same({ "removed" }, closed)
    assert.equal("y", pool:call("y"))
    local st = pool:stats()
    assert.equal(1, st.evictions.removed)
    assert.equal(b, st.endpoints[1].endpoint)
    assert.has_error(function() pool:set_endpoints {} end)
    assert.has_error(function() pool:set_endpoints { b, b } end)
    assert.has_error(function() pool:set_endpoints { "nope" } end)
  end)

  it("ejects an endpoint that keeps failing, for a growing time, and "
     .. "calls go to the other", function()
    local _, live = H.server { protocol = "line" }
    local dead = H.refused_endpoint()
    -- One connection per endpoint: calls queue on the live one, so the
    -- pool keeps trying to grow onto the dead one.
    local pool = H.pool { protocol = "line", endpoints = { dead, live },
                          heartbeat = false, size = 1,
                          reconnect = { initial = 0.01, max = 0.02 },
                          eject = { failures = 2, time = 0.2, max_time = 1 } }
    local ejections, states, expired_at = {}, {}, nil
    pool:on("eject", function(ev)
      ev.at = resilnet.now()
      ejections[#ejections + 1] = ev
    end)
    pool:on("state", function(ev)
      if not ev.connection and ev.endpoint == dead then
        states[#states + 1] = ev.state
        if ev.reason == "eject_expired" then
          expired_at = expired_at or resilnet.now()
        end
      end
    end)
    H.go(function()
      -- Concurrent calls make the pool grow, trying both endpoints.
      for round = 1, 400 do
        if #ejections >= 2 then return end
        local left = 8
        for i = 1, 8 do
          pool:send("r" .. round .. "." .. i, nil, function(reply, e)
            assert.equal("r" .. round .. "." .. i, reply, tostring(e))
            left = left - 1
          end)
        end
        while left > 0 do resilnet.sleep(0.005) end
      end
    end)
    assert.is_true(#ejections >= 2, "expected two ejections")
    assert.equal(dead, ejections[1].endpoint)
    assert.equal(0.2, ejections[1].duration)
    assert.equal(0.4, ejections[2].duration) -- doubled
    assert.equal("failures", ejections[1].reason)
    -- Back after its time, still failing, until ejected again.
    assert.same({ "connecting", "transient_failure", "ejected",
                  "transient_failure", "ejected" },
                { unpack(states, 1, 5) })
    assert.is_true(expired_at - ejections[1].at >= 0.19)
    local st = pool:stats()
    assert.is_true(st.ejections >= 2)
    assert.equal(0, st.failed)
  end)

  it("never ejects the only endpoint (the share cap)", function()
    local dead = H.refused_endpoint()
    local pool = H.pool { protocol = "line", endpoints = { dead },
                          timeout = 0.5,
                          reconnect = { initial = 0.01, max = 0.02 },
                          eject = { failures = 1, time = 10 } }
    local _, e = pool:call("x")
    assert.equal("ECONNREFUSED", e.code)
    assert.is_false(e.maybe_executed)
    local st = pool:stats()
    assert.equal(0, st.ejections)
    assert.is_true(st.connect_failures >= 2)
    assert.equal("transient_failure", st.endpoints[1].state)
  end)

  describe("close", function()
    -- A raw listener that reports how each accepted connection ended.
    local function watch_peer()
      local listener = assert(socket.bind("127.0.0.1", 0))
      listener:settimeout(0)
      local _, port = listener:getsockname()
      return listener, "127.0.0.1:" .. port
    end

    -- Sockets in TIME_WAIT from local_port to remote_port (/proc/net/tcp,
    -- state 06): exactly our connection. The side that closes with a FIN
    -- keeps one; an RST leaves none.
    local function time_waits(local_port, remote_port)
      local n = 0
      local lhex, rhex = ("%04X"):format(local_port),
                         ("%04X"):format(remote_port)
      for line in io.lines("/proc/net/tcp") do
        local loc, rem, st =
          line:match("^%s*%d+: %x+:(%x+) %x+:(%x+) (%x+)")
        if loc == lhex and rem == rhex and st == "06" then n = n + 1 end
      end
      return n
    end

    -- Makes one call the peer never answers, closes the pool with
    -- close_opts, and returns what the peer's next read saw and how many
    -- of our sockets were left in TIME_WAIT.
    local function ending_seen_by(listener, pool, close_opts)
      local conn
      H.go(function()
        pool:send("ping", nil, function() end)
        for _ = 1, 500 do
          conn = listener:accept()
          if conn then return end
          resilnet.sleep(0.002)
        end
      end)
      assert.is_truthy(conn, "no connection accepted")
      conn:settimeout(2)
      assert.equal("ping", conn:receive("*l"))
      local _, port = listener:getsockname()
      local _, client_port = conn:getpeername()
      pool:close(close_opts)
      local _, e = conn:receive("*l")
      conn:close()
      listener:close()
      return e, time_waits(tonumber(client_port), tonumber(port))
    end

    it("reset = true sends an RST (no TIME_WAIT left); a plain close a FIN", function()
      local l1, ep1 = watch_peer()
      local p1 = H.pool { protocol = "line", endpoints = { ep1 },
                          heartbeat = false, timeout = 5 }
      local e1, tw1 = ending_seen_by(l1, p1, { reset = true })
      assert.equal("closed", e1) -- LuaSocket says "closed" for both
      assert.equal(0, tw1)

      local l2, ep2 = watch_peer()
      local p2 = H.pool { protocol = "line", endpoints = { ep2 },
                          heartbeat = false, timeout = 5 }
      local e2, tw2 = ending_seen_by(l2, p2, nil)
      assert.equal("closed", e2)
      assert.equal(1, tw2)
    end)

    it("reset = true fails calls in flight at once with ECLOSED", function()
      local _, ep = H.server { protocol = "line", handler = function()
        resilnet.sleep(5)
        return "late"
      end }
      local pool = H.pool { protocol = "line", endpoints = { ep },
                            heartbeat = false }
      local got
      pool:send("slow", { idempotent = true }, function(r, e) got = { r, e } end)
      H.go(function()
        for _ = 1, 200 do
          if pool:stats().in_flight == 1 and pool:stats().open == 1 then
            return
          end
          resilnet.sleep(0.005)
        end
      end)
      local t0 = resilnet.now()
      pool:close { drain = 10, reset = true }
      assert.is_true(resilnet.now() - t0 < 1)
      assert.is_nil(got[1])
      assert.equal("ECLOSED", got[2].code)
    end)
  end)
end)
