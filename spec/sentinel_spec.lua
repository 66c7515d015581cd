-- resilnet.redis.sentinel against real processes: a redis-server master,
-- one replica and three `redis-server --sentinel` on loopback
-- (spec/helpers/sentinel.lua). A planned failover (SENTINEL FAILOVER) and
-- a frozen master (SIGSTOP) under 8 writers (RPUSH of unique ids: not
-- idempotent) and 8 readers: nobody sees READONLY, no id is in the list
-- twice, every write reported successful is in it, and writes succeed on
-- the new master within a second of the Sentinels naming it.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local S = require "spec.helpers.sentinel"
local redis = require "resilnet.redis"

local why_not = S.unavailable()

-- The original master refuses writes (NOREPLICAS, which proves nothing
-- ran) once its replica is gone: without it, writes it accepts between
-- the replica's promotion and its own demotion would be lost when it
-- resyncs from the new master, however good the client. (Replication
-- stays asynchronous: a write acknowledged in the instant the replica
-- detaches, before the master has read that it did, can still be lost by
-- Redis itself; seen once here with redis-server slowed by ASan's
-- preload, which the helper now leaves out.)
local SAFE_MASTER = { "--min-replicas-to-write", "1",
                      "--min-replicas-max-lag", "10" }

-- Writers under load (RPUSH of unique ids "w<writer>-<n>"), each with one
-- write out at a time.
local WRITERS = 8

local function data_pool(endpoints)
  -- role = "master": ROLE checked while connecting, and a READONLY
  -- answer retires the connection and asks the Sentinels at once.
  return resilnet.pool { endpoints = endpoints, protocol = "resp",
                         timeout = 3, role = "master",
                         retry = { attempts = 5, initial = 0.05, max = 0.5,
                                   budget = { tokens = 1000 } } }
end

-- Runs 8 writers and 8 readers on pool, provoke() at 0.5 s, until 2 s
-- after the Sentinels named a new master (seen by an observer asking
-- every Sentinel every 20 ms). Returns what happened.
local function under_load(t, pool, key, provoke)
  local r = { writes = {}, read_errors = {}, readonly = 0 }
  local stop = false
  local running = 0
  local old = t:master_addr()
  local function note_readonly(err)
    if err and tostring(err.message or err):find("READONLY", 1, true) then
      r.readonly = r.readonly + 1
    end
  end
  for w = 1, WRITERS do
    running = running + 1
    resilnet.spawn(function()
      local n = 0
      while not stop do
        n = n + 1
        local id = ("w%d-%d"):format(w, n)
        local t0 = resilnet.now()
        local reply, err = pool:call { "RPUSH", key, id }
        note_readonly(err)
        r.writes[#r.writes + 1] = { id = id, ok = reply ~= nil,
                                    started = t0, ended = resilnet.now(),
                                    err = err and tostring(err) }
        resilnet.sleep(0.005)
      end
      running = running - 1
    end)
  end
  for _ = 1, 8 do
    running = running + 1
    resilnet.spawn(function()
      while not stop do
        local reply, err = pool:call({ "LLEN", key }, { idempotent = true })
        note_readonly(err)
        if not reply then r.read_errors[#r.read_errors + 1] = tostring(err) end
        resilnet.sleep(0.005)
      end
      running = running - 1
    end)
  end
  -- The observer: every Sentinel, every 20 ms, through its own pools.
  -- How late the loop itself runs (a loaded machine), for the 1 s bound.
  local probe = H.lateness_probe()
  local obs = {}
  for i, ep in ipairs(t.sentinel_endpoints) do
    obs[i] = resilnet.pool { endpoints = { ep }, protocol = "resp",
                             timeout = 0.5, size = 1 }
  end
  resilnet.sleep(0.5)
  r.fault_at = resilnet.now()
  provoke()
  local deadline = resilnet.now() + 30
  while not r.switch_at do
    assert(resilnet.now() < deadline, "no Sentinel named a new master in 30 s")
    for _, p in ipairs(obs) do
      local a = p:call({ "SENTINEL", "GET-MASTER-ADDR-BY-NAME", t.name },
                       { idempotent = true })
      if type(a) == "table" and a[1] .. ":" .. a[2] ~= old then
        r.switch_at, r.new = resilnet.now(), a[1] .. ":" .. a[2]
        break
      end
    end
    resilnet.sleep(0.02)
  end
  resilnet.sleep(2)
  stop = true
  deadline = resilnet.now() + 10
  while running > 0 do
    assert(resilnet.now() < deadline, "load tasks did not end in 10 s")
    resilnet.sleep(0.01)
  end
  for _, p in ipairs(obs) do p:close() end
  probe.running = false
  r.lateness = probe.worst
  r.old = old
  return r
end

-- Every claim of the issue's "Done when" on one run's record.
local function check(t, r, key, pool, failovers)
  assert.equal(0, r.readonly, "a caller saw READONLY")
  -- The list, from the new master.
  local host, port = r.new:match("^(.*):(%d+)$")
  assert.equal("127.0.0.1", host)
  local list = S.cmd(tonumber(port), { "LRANGE", key, 0, -1 })
  assert.is_table(list)
  local seen, ok_count, failed, late_failures = {}, 0, 0, {}
  for _, id in ipairs(list) do
    assert.is_nil(seen[id], "id twice in the list: " .. id)
    seen[id] = true
  end
  local first_ok_after
  -- Acknowledged by the old master and lost by Redis itself: Sentinel's
  -- failover does not pause the old master, and replication is
  -- asynchronous, so a write it acknowledged in the instant between the
  -- replica's promotion and its noticing the replica gone (which
  -- min-replicas-to-write then refuses) is not on the new master. No
  -- client can keep that one (docs/operations.md). Tolerated only for
  -- writes acknowledged after the fault and before the Sentinels named
  -- the new master, and at most one per writer (each has one write out
  -- at a time: the writes in flight at the promotion; a loaded ASan run
  -- lost all 8); one acknowledged later (by the new master, or by the old
  -- one after the pool should have moved) fails.
  local lost_by_redis, lost_per_writer = {}, {}
  for _, w in ipairs(r.writes) do
    if w.ok and not seen[w.id] and w.ended >= r.fault_at
       and w.ended <= r.switch_at then
      local writer = w.id:match("^(w%d+)-")
      lost_per_writer[writer] = (lost_per_writer[writer] or 0) + 1
      assert.is_true(lost_per_writer[writer] <= 1, "acknowledged writes "
                     .. "lost around the promotion, more than one of "
                     .. writer .. ": " .. w.id)
      lost_by_redis[#lost_by_redis + 1] = w.id
      seen[w.id] = "lost by redis"
    end
  end
  for _, w in ipairs(r.writes) do
    if w.ok then
      ok_count = ok_count + 1
      assert.is_true(seen[w.id] ~= nil,
                     "reported successful, not in the list: " .. w.id)
      if w.ended > r.switch_at and (not first_ok_after
                                     or w.ended < first_ok_after) then
        first_ok_after = w.ended
      end
    else
      failed = failed + 1
      -- Writes started a second after the switch all succeed.
      if w.started > r.switch_at + 1 + r.lateness then
        late_failures[#late_failures + 1] = w.id .. ": " .. tostring(w.err)
      end
    end
  end
  assert.is_true(ok_count > 100, "too few writes succeeded: " .. ok_count)
  assert.is_truthy(first_ok_after, "no write succeeded after the switch")
  local lag = first_ok_after - r.switch_at
  assert.is_true(lag <= 1 + r.lateness, ("first write on the new master "
    .. "%.3f s after the switch (loop lateness %.3f s)"):format(lag,
    r.lateness))
  assert.same({}, late_failures)
  -- The pool follows: it names the new master alone, and said so.
  local eps = pool:stats().endpoints
  assert.equal(1, #eps)
  assert.equal(r.new, eps[1].endpoint)
  assert.equal(1, #failovers)
  assert.equal(r.old, failovers[1].old)
  assert.equal(r.new, failovers[1].new)
  assert.equal(1, pool:stats().discovery.failovers)
  -- The old master's connections were retired, not reused: none is
  -- open, and they were counted as removed by discovery.
  local deadline = resilnet.now() + 5
  while pool:stats().evictions.removed == 0 and resilnet.now() < deadline do
    resilnet.sleep(0.05)
  end
  assert.is_true(pool:stats().evictions.removed >= 1)
  -- Measured numbers, for the report.
  print(("\n  sentinel: switch %.2f s after the fault, first write on the "
         .. "new master %.3f s after it; %d writes ok, %d failed, %d reads "
         .. "failed, %d acknowledged by the old master and lost by redis"
         ):format(r.switch_at - r.fault_at, lag, ok_count, failed,
                  #r.read_errors, #lost_by_redis))
end

describe("resilnet.redis.sentinel", function()
  if why_not then
    pending("skipped: " .. why_not)
    return
  end
  after_each(H.cleanup)

  it("checks its options, naming the option", function()
    assert.has_error(function() redis.sentinel { name = "m" } end,
      "resilnet.redis.sentinel: option 'sentinels' is required")
    assert.has_error(function()
      redis.sentinel { sentinels = { "127.0.0.1:1" }, name = "m",
                       role = "primary" }
    end, "resilnet.redis.sentinel: option 'role' must be \"master\" or "
      .. "\"replica\", got 'primary'")
    assert.has_error(function()
      redis.sentinel { sentinels = {}, name = "m" }
    end, "resilnet.redis.sentinel: option 'sentinels' must be a non-empty "
      .. "array of \"host:port\" strings, got table")
  end)

  it("asks in order, passes a dead Sentinel over and puts the one that "
     .. "answered first; role = replica gives the replica; Sentinels with a "
     .. "password, never shown", function()
    local t = S.start { sentinel_password = "s3cret-pw" }
    local ok, err = pcall(function()
      local dead = H.refused_endpoint()
      local fn, s = redis.sentinel { sentinels = { dead,
        t.sentinel_endpoints[1], t.sentinel_endpoints[2] }, name = t.name,
        sentinel_password = "s3cret-pw", poll_interval = 1 }
      H.go(function()
        -- A wrong password: the server's refusal, not the password.
        local bad_fn, bad = redis.sentinel { sentinels = t.sentinel_endpoints,
          name = t.name, sentinel_password = "wrong-pw-123" }
        local nopool, why = resilnet.pool { endpoints = bad_fn,
                                            protocol = "resp" }
        assert.is_nil(nopool)
        assert.matches("EAUTH: WRONGPASS", why)
        assert.is_nil(why:find("wrong-pw-123", 1, true))
        bad:close()
        local pool = assert(data_pool(fn))
        assert.equal("PONG", pool:call { "PING" })
        assert.same({ t.master.endpoint }, pool:stats().discovery.endpoints)
        local st = s:stats()
        assert.same({ t.sentinel_endpoints[1], dead, t.sentinel_endpoints[2] },
                    st.sentinels)
        assert.equal(t.master.endpoint, st.master)
        -- The dead one, first again, is backing off now: passed over
        -- without waiting for it (asking it costs a whole timeout, 0.5 s).
        s.order = { dead, t.sentinel_endpoints[2], t.sentinel_endpoints[1] }
        local t0 = resilnet.now()
        assert.same({ t.master.endpoint }, s:ask())
        assert.is_true(resilnet.now() - t0 < 0.4)
        assert.equal(t.sentinel_endpoints[2], s:stats().sentinels[1])
        local rfn, rs = redis.sentinel { sentinels = t.sentinel_endpoints,
                                         name = t.name, role = "replica",
                                         sentinel_password = "s3cret-pw" }
        local rpool = assert(resilnet.pool { endpoints = rfn,
                                             protocol = "resp" })
        assert.same({ t.replica.endpoint }, rpool:stats().discovery.endpoints)
        local role = rpool:call { "ROLE" }
        assert.equal("slave", role[1])
        rpool:close()
        pool:close()
        -- Closing the only pool using it stops the poll at its next turn
        -- (poll_interval, 1 s), which closes the Sentinel pools; a pool
        -- made later opens them again.
        local deadline = resilnet.now() + 5
        while s.polling and resilnet.now() < deadline do
          resilnet.sleep(0.05)
        end
        assert.is_false(s.polling)
        assert.is_nil(next(s.pools))
        local again = assert(data_pool(fn))
        assert.equal("PONG", again:call { "PING" })
        again:close()
        assert.is_true(s:close())
        assert.is_nil(next(s.pools))
        assert.is_true(rs:close())
      end, 30)
    end)
    t:close()
    if not ok then error(err, 0) end
  end)

  it("a Sentinel killed and restarted under its +switch-master "
     .. "subscription: one gap, heard, and it subscribes again", function()
    local t = S.start {}
    local ok, err = pcall(function()
      H.go(function()
        local fn, s = redis.sentinel { sentinels = t.sentinel_endpoints,
                                       name = t.name, poll_interval = 60 }
        local pool = assert(data_pool(fn))
        assert.equal("PONG", pool:call { "PING" })
        local victim = t.sentinels[1]
        local sub = s.subs[t.sentinel_endpoints[1]]
        -- Subscribed: the Sentinel lists a client in subscribe mode.
        local function subscribed()
          local list = S.cmd(victim.port, { "CLIENT", "LIST" })
          return type(list) == "string"
            and list:find(" sub=1 ", 1, true) ~= nil
        end
        local deadline = resilnet.now() + 10
        while not subscribed() do
          assert(resilnet.now() < deadline, "never subscribed")
          resilnet.sleep(0.05)
        end
        local heard = s:stats().heard
        victim:restart() -- SIGKILL, then the same command
        deadline = resilnet.now() + 20
        while sub:stats().gaps == 0 do
          assert(resilnet.now() < deadline, "no gap after the restart")
          resilnet.sleep(0.05)
        end
        assert.equal(heard + 1, s:stats().heard)
        deadline = resilnet.now() + 10
        while not subscribed() do
          assert(resilnet.now() < deadline, "not subscribed again")
          resilnet.sleep(0.05)
        end
        assert.equal(1, sub:stats().gaps)
        assert.equal(2, sub:stats().connections)
        assert.equal("PONG", pool:call { "PING" })
        pool:close()
        assert.is_true(s:close())
      end, 60)
    end)
    t:close()
    if not ok then error(err, 0) end
  end)

  it("SENTINEL FAILOVER under 8 writers and 8 readers, found through "
     .. "+switch-master", function()
    local t = S.start { master_args = SAFE_MASTER, failover_timeout = 5000 }
    local ok, err = pcall(function()
      H.go(function()
        -- poll_interval 60: no poll runs during the test, so only the
        -- +switch-master subscription can make the pool follow in 1 s.
        local fn, s = redis.sentinel { sentinels = t.sentinel_endpoints,
                                       name = t.name, poll_interval = 60 }
        local pool = assert(data_pool(fn))
        local failovers = {}
        pool:on("failover", function(ev) failovers[#failovers + 1] = ev end)
        local r = under_load(t, pool, "ledger", function()
          local reply = S.cmd(t.sentinels[1].port,
                              { "SENTINEL", "FAILOVER", t.name })
          assert(reply == "OK", "SENTINEL FAILOVER: " .. tostring(
                 type(reply) == "table" and reply.err or reply))
        end)
        check(t, r, "ledger", pool, failovers)
        assert.equal(t.replica.endpoint, r.new)
        assert.equal(1, s:stats().failovers)
        assert.is_true(s:stats().heard >= 1)
        pool:close()
        assert.is_true(s:close())
        assert.is_nil(next(s.subs))
      end, 60)
    end)
    t:close()
    if not ok then error(err, 0) end
  end)

  it("the master frozen by SIGSTOP under 8 writers and 8 readers",
     function()
    local t = S.start { down_after = 1000, failover_timeout = 3000 }
    local ok, err = pcall(function()
      H.go(function()
        local fn = redis.sentinel { sentinels = t.sentinel_endpoints,
                                    name = t.name, poll_interval = 0.1 }
        local pool = assert(data_pool(fn))
        local failovers = {}
        pool:on("failover", function(ev) failovers[#failovers + 1] = ev end)
        local r = under_load(t, pool, "ledger", function()
          t.master:kill("STOP")
        end)
        check(t, r, "ledger", pool, failovers)
        assert.equal(t.replica.endpoint, r.new)
        pool:close()
      end, 60)
    end)
    t:close()
    if not ok then error(err, 0) end
  end)
end)
