-- Pools over TLS (issue 17) against a real redis-server --tls-port: calls
-- verified against the test CA, refused certificates as configuration
-- faults (no reconnect storm), a killed and restarted TLS server under
-- idle pooled connections, idle TLS connections under 10 s of heartbeats
-- (TLS 1.3 session tickets are not stray bytes), client certificates,
-- rotation, and the option's checks. Certificates: spec/helpers/tls_redis.lua.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local T = require "spec.helpers.tls_redis"

local tls_built = resilnet._options.pool and (function()
  -- A build without OpenSSL raises naming what is missing.
  local ok, err = pcall(resilnet.pool, { endpoints = { "127.0.0.1:1" },
                                         tls = {} })
  if ok then err:close() end
  return ok or not tostring(err):find("without OpenSSL", 1, true)
end)()

describe("tls pool", function()
  if not tls_built then
    it("raises a clear error without OpenSSL", function()
      local ok, err = pcall(resilnet.pool, { endpoints = { "127.0.0.1:1" },
                                             tls = {} })
      assert.is_false(ok)
      assert.matches("option 'tls': TLS asked for, but resilnet was built "
                     .. "without OpenSSL", err, 1, true)
    end)
    return
  end

  local redis, why = T.start()
  if not redis then
    it("starts a redis-server with TLS", function() error(why) end)
    return
  end

  teardown(function()
    T.stop(redis)
    T.remove_certs()
  end)
  after_each(H.cleanup)

  local function tls(extra)
    local t = { cafile = T.cert("ca.pem") }
    for k, v in pairs(extra or {}) do t[k] = v end
    return t
  end

  it("calls succeed with verification on, by IP and by name", function()
    for _, host in ipairs { "127.0.0.1", "localhost" } do
      local pool = H.pool { endpoints = { host .. ":" .. redis.port },
                            tls = tls(), timeout = 5 }
      assert.equal("OK", pool:call { "SET", "k", host })
      assert.equal(host, pool:call { "GET", "k" })
      local st = pool:stats()
      assert.equal(0, st.tls_insecure)
      assert.equal(0, st.tls_failures)
      pool:close()
    end
  end)

  local function refused(opts, reason)
    local pool = H.pool { endpoints = { redis.endpoint }, tls = opts,
                          connect_timeout = 2, timeout = 3,
                          reconnect = { max = 2 } }
    local connects, verify_events = 0, 0
    pool:on("state", function(ev)
      if ev.connection and ev.state == "connecting" then
        connects = connects + 1
      end
      if ev.reason == "tls_verify" then verify_events = verify_events + 1 end
    end)
    local start = resilnet.now()
    local reply, err = pool:call { "PING" }
    assert.is_nil(reply)
    assert.equal("ETLSVERIFY", err.code)
    assert.matches(reason, err.message, 1, true)
    assert.is_false(err.maybe_executed)
    assert.is_true(resilnet.now() - start < 2) -- within connect_timeout
    assert.is_true(verify_events >= 1)
    -- Calls for 5 s: connects stay at the backoff's bound (one per
    -- reconnect.max), every call fails with the cause.
    local calls = 0
    while resilnet.now() - start < 5 do
      local r, e = pool:call { "PING" }
      assert.is_nil(r)
      assert.equal("ETLSVERIFY", e.code)
      calls = calls + 1
      resilnet.sleep(0.05)
    end
    assert.is_true(calls > 10)
    assert.is_true(connects >= 1 and connects <= 4,
                   "connects: " .. connects)
    assert.equal(connects, pool:stats().tls_failures)
    pool:close()
  end

  it("a wrong CA is ETLSVERIFY, with no reconnect storm", function()
    refused({ cafile = T.cert("wrong-ca.pem") }, "unknown CA")
  end)

  it("a wrong name is ETLSVERIFY, with no reconnect storm", function()
    refused(tls { server_name = "db.example.com" }, "name mismatch")
  end)

  it("insecure skips verification and is counted", function()
    local pool = H.pool { endpoints = { redis.endpoint },
                          tls = { cafile = T.cert("wrong-ca.pem"),
                                  insecure = true } }
    assert.equal("PONG", pool:call { "PING" })
    assert.equal(1, pool:stats().tls_insecure)
  end)

  it("idle TLS connections survive 10 s of heartbeats without a false "
     .. "eviction", function()
    local pool = H.pool { endpoints = { redis.endpoint }, tls = tls(),
                          size = 3, min_idle = 3,
                          heartbeat = { interval = 0.1, timeout = 0.3 } }
    -- Counted from the events as well as the stats: every connect and
    -- every close of a connection, whatever its reason.
    local connects, closes = 0, {}
    pool:on("state", function(ev)
      if not ev.connection then return end
      if ev.state == "connecting" then connects = connects + 1 end
      if ev.state == "closed" then
        closes[#closes + 1] = tostring(ev.reason) .. "/"
                              .. tostring(ev.error)
      end
    end)
    local deadline = resilnet.now() + 3
    while pool:stats().idle < 3 and resilnet.now() < deadline do
      resilnet.sleep(0.05)
    end
    assert.equal(3, pool:stats().idle)
    -- 10 s of 100 ms heartbeats (100 intervals; Debian's redis-server
    -- sends its TLS 1.3 session tickets right after each handshake, so
    -- every idle socket holds unread bytes), with a call after each idle
    -- stretch of 0.5 s: each such call looks at its connection's socket
    -- first, where the tickets may wait.
    local start, calls = resilnet.now(), 0
    while resilnet.now() - start < 10 do
      resilnet.sleep(0.5)
      assert.equal("PONG", pool:call { "PING" })
      calls = calls + 1
    end
    local st = pool:stats()
    assert.equal(3, connects, "connect events")
    assert.same({}, closes)
    assert.equal(3, st.connects)
    assert.equal(0, st.connect_failures)
    assert.equal(0, st.dead_peers)
    assert.same({ idle = 0, lifetime = 0, stale = 0, dead_peer = 0,
                  peer_closed = 0, unexpected = 0, removed = 0, error = 0 },
                st.evictions)
    -- One idle connection (the endpoint's prober) pings every 0.1 s
    -- unless a read showed the server alive, the other two every 0.8 s:
    -- about 100 heartbeats in 10 s (95 measured here), over 50 even on a
    -- loaded machine; none missed.
    assert.is_true(st.heartbeats > 50, "heartbeats: " .. st.heartbeats)
    assert.equal(0, st.heartbeats_missed)
    assert.is_true(calls >= 15)
  end)

  it("SIGKILL and restart under idle TLS connections: the next 1,000 "
     .. "calls succeed", function()
    local port = redis.port
    local pool = H.pool { endpoints = { redis.endpoint }, tls = tls(),
                          size = 4, min_idle = 4, timeout = 5,
                          reconnect = { initial = 0.05, max = 0.5 } }
    local deadline = resilnet.now() + 3
    while pool:stats().idle < 4 and resilnet.now() < deadline do
      resilnet.sleep(0.05)
    end
    assert.equal(4, pool:stats().idle)
    T.stop(redis, "KILL")
    redis = assert(T.start(port))
    for i = 1, 1000 do
      local reply, err = pool:call { "SET", "k" .. i, i }
      assert.equal("OK", reply, err and tostring(err))
    end
    -- The calls went over new connections: the four idle ones were to the
    -- killed server.
    assert.is_true(pool:stats().connects > 4)
  end)

  it("a subscriber over TLS backs pressure onto its connection: paused "
     .. "past heartbeat timeouts, then every message in order", function()
    local sub_pool = H.pool { endpoints = { redis.endpoint }, tls = tls(),
                              timeout = 5,
                              heartbeat = { interval = 0.05, timeout = 0.2 } }
    local pub = H.pool { endpoints = { redis.endpoint }, tls = tls(),
                         timeout = 5 }
    local seen, gate = {}, false
    H.go(function()
      local sub = sub_pool:subscribe { channels = { "tq" }, max_queue = 5,
        handler = function(kind, _, payload)
          if kind == "message" then seen[#seen + 1] = payload end
          while gate do resilnet.sleep(0.01) end
        end }
      local deadline = resilnet.now() + 5
      while #seen == 0 do -- subscribing is asynchronous
        assert(resilnet.now() < deadline, "never subscribed")
        pub:call { "PUBLISH", "tq", "probe" }
        resilnet.sleep(0.05)
      end
      local probes, dead = #seen, sub_pool:stats().dead_peers
      gate = true
      local burst = {}
      for i = 1, 300 do burst[i] = { "PUBLISH", "tq", tostring(i) } end
      pub:batch(burst)
      while not sub:stats().paused do
        assert(resilnet.now() < deadline + 5, "never paused")
        resilnet.sleep(0.01)
      end
      resilnet.sleep(1) -- five heartbeat timeouts
      assert.equal(dead, sub_pool:stats().dead_peers)
      gate = false
      deadline = resilnet.now() + 20
      while #seen < probes + 300 do
        assert(resilnet.now() < deadline, "got " .. #seen - probes)
        resilnet.sleep(0.01)
      end
      for i = 1, 300 do assert.equal(tostring(i), seen[probes + i]) end
      local s = sub:stats()
      assert.is_true(s.queued_max <= 5)
      assert.is_true(s.pauses >= 1)
      assert.equal(1, s.connections)
      assert.equal(dead, sub_pool:stats().dead_peers)
      sub:close()
    end, 40)
  end)

  it("client certificates, when the server requires them", function()
    local strict = assert(T.start(nil, { auth_clients = true }))
    finally(function() T.stop(strict) end)
    local pool = H.pool { endpoints = { strict.endpoint },
                          tls = tls { certificate = T.cert("client.pem"),
                                      key = T.cert("client.key") } }
    assert.equal("PONG", pool:call { "PING" })
    local anonymous = H.pool { endpoints = { strict.endpoint }, tls = tls(),
                               timeout = 1 }
    local reply, err = anonymous:call { "PING" }
    assert.is_nil(reply)
    assert.is_false(err.maybe_executed)
  end)

  it("reload_tls: new files for new connections", function()
    local pool = H.pool { endpoints = { redis.endpoint },
                          tls = { cafile = T.cert("wrong-ca.pem") },
                          reconnect = { max = 30 } }
    local reply, err = pool:call { "PING" }
    assert.is_nil(reply)
    assert.equal("ETLSVERIFY", err.code)
    local ok, rerr = pool:reload_tls { cafile = "/nonexistent/ca.pem" }
    assert.is_nil(ok)
    assert.equal("ETLS", rerr.code)
    assert.is_true(pool:reload_tls { cafile = T.cert("ca.pem") })
    local start = resilnet.now()
    assert.equal("PONG", pool:call { "PING" })
    assert.is_true(resilnet.now() - start < 2)
    assert.has_error(function() pool:reload_tls { verify = true } end,
                     "pool:reload_tls: unknown option 'verify'")
    local plain = H.pool { endpoints = { redis.endpoint } }
    assert.has_error(function()
      plain:reload_tls { cafile = T.cert("ca.pem") }
    end)
  end)

  it("checks the option", function()
    local ep = { redis.endpoint }
    assert.has_error(function()
      resilnet.pool { endpoints = ep, tls = "yes" }
    end, "resilnet.pool: option 'tls' must be a table or false, got 'yes'")
    assert.has_error(function()
      resilnet.pool { endpoints = ep, tls = { cafile = 1 } }
    end, "resilnet.pool: option 'tls.cafile' must be a string without zero bytes, got 1")
    assert.has_error(function()
      resilnet.pool { endpoints = ep, tls = { insecure = "no" } }
    end, "resilnet.pool: option 'tls.insecure' must be a boolean, got 'no'")
    assert.has_error(function()
      resilnet.pool { endpoints = ep, tls = { verify_client = true } }
    end, "resilnet.pool: unknown option 'tls.verify_client'")
    local ok, err = pcall(resilnet.pool, { endpoints = ep,
                                          tls = { cafile = "/nope.pem" } })
    assert.is_false(ok)
    assert.matches("option 'tls': cannot load cafile/capath", err, 1, true)
    ok, err = pcall(resilnet.pool, { endpoints = ep,
                    tls = { certificate = T.cert("client.pem") } })
    assert.is_false(ok)
    assert.matches("certificate and key go together", err, 1, true)
    local off = H.pool { endpoints = ep, tls = false }
    assert.equal("table", type(off:stats()))
  end)

  it("a unix socket endpoint needs tls.server_name, said when the pool is "
     .. "made", function()
    local sock = os.tmpname() .. ".sock"
    local eps = { redis.endpoint, "unix:" .. sock }
    local ok, err = pcall(resilnet.pool, { endpoints = eps, tls = tls() })
    assert.is_false(ok)
    assert.matches("resilnet.pool: option 'tls': tls on unix:" .. sock
                   .. " needs tls.server_name", err, 1, true)
    -- With a name to check (or none checked at all) the pool is made.
    H.pool { endpoints = eps, tls = tls { server_name = "localhost" } }
    H.pool { endpoints = eps, tls = tls { insecure = true } }
  end)

  it("a unix socket added later needs tls.server_name too (set_endpoints, "
     .. "discovery, reload_tls)", function()
    local sock = os.tmpname() .. ".sock"
    local eps = { redis.endpoint, "unix:" .. sock }
    local pool = H.pool { endpoints = { redis.endpoint }, tls = tls() }
    local ok, err = pcall(pool.set_endpoints, pool, eps)
    assert.is_false(ok)
    assert.matches("cannot verify", err, 1, true)
    assert.equal(1, #pool:stats().endpoints) -- nothing changed

    -- Discovery that hands one over: a failed run, the old list kept.
    local found = { redis.endpoint }
    local disc = H.pool { endpoints = function() return found end,
                          tls = tls(), resolve_ttl = 0 }
    local runs = {}
    disc:on("discovery", function(ev) runs[#runs + 1] = ev end)
    found = eps
    H.go(function()
      disc._discovery:run("connect_failure")
      local t0 = resilnet.now()
      while #runs == 0 and resilnet.now() - t0 < 5 do resilnet.sleep(0.01) end
    end, 10)
    assert.equal(1, #runs)
    assert.is_false(runs[1].ok)
    assert.matches("cannot verify", runs[1].error, 1, true)
    assert.equal(1, #disc:stats().endpoints)

    -- With a name the list is taken; TLS options without one are then
    -- refused by reload_tls, naming the socket.
    local named = H.pool { endpoints = { redis.endpoint },
                           tls = tls { server_name = "localhost" } }
    assert.is_true(named:set_endpoints(eps))
    ok, err = pcall(named.reload_tls, named, tls())
    assert.is_false(ok)
    assert.matches("pool:reload_tls: tls on unix:" .. sock
                   .. " needs tls.server_name", err, 1, true)
  end)
end)
