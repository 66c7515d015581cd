-- pool:hold and blocking calls against a real redis-server (issue 19
-- item 3): WATCH ... MULTI ... EXEC with logic between on one reserved
-- connection, the reset rules seen from Lua, BLPOP under heartbeats much
-- shorter than its wait (blocking = true, and block = its own timeout),
-- and a server frozen (SIGSTOP) during a BLPOP.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"

local null = resilnet.null

describe("pool:hold", function()
  local redis, why = R.start()
  if not redis then
    it("starts a redis-server", function() error(why) end)
    return
  end
  teardown(function() R.stop(redis) end)
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("WATCH/GET/MULTI/SET/EXEC from 8 tasks: no lost update", function()
    local TASKS, EACH = 8, 40
    local pool = H.pool { endpoints = { redis.endpoint }, timeout = 5,
                          size = 8 }
    assert.equal("OK", pool:call { "SET", "counter", "0" })
    local committed, aborted, running = 0, 0, TASKS
    H.go(function()
      for _ = 1, TASKS do
        resilnet.spawn(function()
          for _ = 1, EACH do
            local ok, err = pool:hold(function(conn)
              assert.equal("OK", conn:call { "WATCH", "counter" })
              local v = tonumber(conn:call { "GET", "counter" })
              -- Logic between the read and the write: the other tasks
              -- get to change the key meanwhile, and WATCH must see it.
              resilnet.sleep(0.001)
              assert.equal("OK", conn:call { "MULTI" })
              assert.equal("QUEUED", conn:call { "SET", "counter", v + 1 })
              local exec = conn:call { "EXEC" }
              return exec ~= null
            end)
            assert(err == nil, tostring(err))
            if ok == true then
              committed = committed + 1
            else
              aborted = aborted + 1
            end
          end
          running = running - 1
        end)
      end
      while running > 0 do resilnet.sleep(0.01) end
    end, 60)
    local counter = tonumber(pool:call { "GET", "counter" })
    print(("\n[hold] %d committed, %d aborted by WATCH"):format(committed,
                                                                aborted))
    assert.equal(TASKS * EACH, committed + aborted)
    assert.equal(committed, counter) -- every success counted, once
    -- The contention was real: WATCH aborted some (on one connection
    -- per hold; spread over the pool's connections it would see nothing).
    assert.is_true(aborted > 0, "no transaction was aborted")
    local s = pool:stats()
    assert.equal(TASKS * EACH, s.holds)
    assert.equal(0, s.holds_reset) -- EXEC ended every MULTI and WATCH
    assert.equal(0, s.held)
  end)

  it("reuses a connection left clean, closes one left in MULTI", function()
    local pool = H.pool { endpoints = { redis.endpoint }, timeout = 5,
                          size = 1 }
    H.go(function()
      local id1 = pool:hold(function(conn)
        return conn:call { "CLIENT", "ID" }
      end)
      -- CLIENT ID only asks: the same connection comes back, clean. CLIENT
      -- SETNAME changes it (as would TRACKING, REPLY, ...): the state is
      -- unknown, and the connection is closed when given back.
      local renamed = pool:hold(function(conn)
        assert.is_false(conn:unknown())
        assert.equal(id1, conn:call { "CLIENT", "ID" })
        assert.equal("PONG", conn:call { "PING" })
        assert.is_false(conn:unknown())
        assert.equal("OK", conn:call { "CLIENT", "SETNAME", "renamed" })
        return conn:unknown()
      end)
      assert.is_true(renamed)
      local s = pool:stats()
      assert.equal(1, s.holds_reset)
      assert.is_true(pool:hold(function(conn)
        return conn:call { "CLIENT", "ID" } ~= id1
      end))
      -- Left in MULTI: closed on release, and the queued SET never runs.
      pool:call { "DEL", "m" }
      local left = pool:hold(function(conn)
        assert.equal("OK", conn:call { "MULTI" })
        assert.equal("QUEUED", conn:call { "SET", "m", "x" })
        return conn:unknown()
      end)
      assert.is_true(left)
      assert.equal(2, pool:stats().holds_reset)
      assert.equal(null, pool:call { "GET", "m" })
      -- fn raising: re-raised, the connection given back (clean: reused).
      -- (Lua 5.1 cannot yield inside pcall: there neither the test nor
      -- pool:hold can catch it, and the collector closes the connection.)
      if _VERSION ~= "Lua 5.1" or jit then
        local ok, err = pcall(pool.hold, pool, function(conn)
          conn:call { "PING" }
          error("boom", 0)
        end)
        assert.is_false(ok)
        assert.equal("boom", err)
        assert.equal(2, pool:stats().holds_reset)
        assert.equal(0, pool:stats().held)
      end
      assert.is_number(id1)
    end, 20)
  end)

  it("a released connection cannot be used, a dead one fails calls", function()
    local pool = H.pool { endpoints = { redis.endpoint }, timeout = 5 }
    H.go(function()
      local kept = pool:hold(function(conn) return conn end)
      -- has_error calls it inside pcall, where Lua 5.1 cannot wait: there
      -- the wait is refused before the connection is looked at.
      local released = (_VERSION == "Lua 5.1" and not jit)
        and "resilnet: conn:call cannot wait here"
        or "resilnet: the held connection was released (use it only inside "
           .. "pool:hold's function)"
      local ok, err = pcall(kept.call, kept, { "PING" })
      assert.is_false(ok)
      assert.truthy(tostring(err):find(released, 1, true), err)
      local r1, r2 = pool:hold(function(conn)
        local id = conn:call { "CLIENT", "ID" }
        assert.equal(1, pool:call { "CLIENT", "KILL", "ID", tostring(id) })
        -- Killed under it: the held call fails, it is never sent on
        -- another connection.
        local r, err = conn:call { "SET", "after_kill", "1" }
        local r3, err3 = conn:call { "PING" }
        return { r, err, r3, err3 }
      end)
      assert.is_nil(r2)
      assert.is_nil(r1[1])
      assert.is_true(resilnet.is_error(r1[2]))
      assert.is_nil(r1[3])
      assert.is_true(resilnet.is_error(r1[4]))
      assert.is_false(r1[4].maybe_executed)
      assert.equal(null, pool:call { "GET", "after_kill" })
    end, 20)
  end)

  it("waits at most its timeout for a connection", function()
    local pool = H.pool { endpoints = { redis.endpoint }, timeout = 5,
                          size = 1 }
    H.go(function()
      local inner_err
      pool:hold(function()
        local t0 = resilnet.now()
        local r, err = pool:hold(function() return true end,
                                 { timeout = 0.2 })
        assert.is_nil(r)
        inner_err = err
        assert.is_true(resilnet.now() - t0 >= 0.19)
        assert.is_true(resilnet.now() - t0 < 3)
      end)
      assert.equal("ETIMEDOUT", inner_err.code)
    end, 20)
  end)

  it("rejects bad options by name", function()
    local pool = H.pool { endpoints = { redis.endpoint } }
    assert.has_error(function() pool:hold(42) end,
                     "pool:hold: expected a function, got number")
    assert.has_error(function() pool:hold(function() end, { timeout = "x" }) end)
    H.go(function()
      pool:hold(function(conn)
        assert.has_error(function()
          conn:call({ "PING" }, { idempotent = true })
        end)
      end)
    end, 10)
  end)

  it("rejects a bad block, naming it", function()
    local pool = H.pool { endpoints = { redis.endpoint } }
    local function raises(f, pattern)
      local ok, err = pcall(f)
      assert.is_false(ok)
      assert.truthy(tostring(err):find(pattern, 1, true), tostring(err))
    end
    local range = "option 'block' must be a number of seconds from 0 to 1e9"
    local contra = "option 'block' makes a blocking call: it cannot go "
                   .. "with blocking = false"
    raises(function() pool:call({ "PING" }, { block = -1 }) end,
           "pool:call: " .. range .. ", got -1")
    raises(function() pool:call({ "PING" }, { block = "5" }) end,
           "pool:call: " .. range .. ", got '5'")
    raises(function() pool:call({ "PING" }, { block = 0 / 0 }) end, range)
    raises(function() pool:call({ "PING" }, { block = math.huge }) end,
           range)
    raises(function()
      pool:call({ "PING" }, { block = 5, blocking = false })
    end, "pool:call: " .. contra)
    raises(function()
      pool:batch({ { "PING" } }, { block = true })
    end, "pool:batch: " .. range .. ", got boolean")
    H.go(function()
      pool:hold(function(conn)
        raises(function() conn:call({ "PING" }, { block = -0.5 }) end,
               "conn:call: " .. range .. ", got -0.5")
        raises(function()
          conn:send({ "PING" }, { block = {} }, function() end)
        end, "conn:send: " .. range .. ", got table")
        raises(function()
          conn:batch({ { "PING" } }, { block = 1, blocking = false })
        end, "conn:batch: " .. contra)
        -- Nothing was sent: the connection goes back clean.
        assert.is_false(conn:unknown())
      end)
    end, 10)
  end)
end)

describe("blocking calls", function()
  local redis, why = R.start()
  if not redis then
    it("starts a redis-server", function() error(why) end)
    return
  end
  teardown(function()
    os.execute("kill -CONT " .. redis.pid .. " 2>/dev/null")
    R.stop(redis)
  end)
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  local function pool_with_heartbeats()
    return H.pool { endpoints = { redis.endpoint }, timeout = 5, size = 4,
                    heartbeat = { interval = 1, timeout = 0.3 } }
  end

  it("BLPOP 5 s under 1 s heartbeats (timeout 0.3 s): not dead", function()
    local pool = pool_with_heartbeats()
    assert.equal(0, pool:call { "DEL", "q1", "q2" })
    local held_r, pooled_r, during, t_held, t_pooled
    H.go(function()
      local left = 2
      local t0 = resilnet.now()
      resilnet.spawn(function()
        held_r = { pool:hold(function(conn)
          return conn:call({ "BLPOP", "q1", "5" },
                           { blocking = true, timeout = 8 })
        end) }
        t_held = resilnet.now() - t0
        left = left - 1
      end)
      resilnet.spawn(function()
        pooled_r = { pool:call({ "BLPOP", "q2", "5" },
                               { blocking = true, timeout = 8 }) }
        t_pooled = resilnet.now() - t0
        left = left - 1
      end)
      -- Meanwhile other calls go to other connections, not behind a BLPOP.
      resilnet.sleep(1.5)
      local c0 = resilnet.now()
      for i = 1, 20 do assert.equal(i, pool:call { "INCR", "during" }) end
      during = resilnet.now() - c0
      while left > 0 do resilnet.sleep(0.05) end
    end, 20)
    assert.equal(null, held_r[1])
    assert.equal(null, pooled_r[1])
    assert.is_true(t_held >= 4.9 and t_pooled >= 4.9)
    assert.is_true(during < 2, "calls waited behind a BLPOP: " .. during)
    local s = pool:stats()
    assert.equal(0, s.dead_peers)
    assert.equal(0, s.evictions.dead_peer)
    assert.is_true(s.heartbeats > 0, "no heartbeats were sent")
  end)

  it("BLPOP answered by an LPUSH from another connection", function()
    local pool = pool_with_heartbeats()
    local got
    H.go(function()
      resilnet.spawn(function()
        resilnet.sleep(1.5)
        pool:call { "LPUSH", "q3", "hello" }
      end)
      got = pool:call({ "BLPOP", "q3", "10" },
                      { blocking = true, timeout = 12 })
    end, 20)
    assert.same({ "q3", "hello" }, got)
    assert.equal(0, pool:stats().dead_peers)
  end)

  it("a frozen server (SIGSTOP) during a BLPOP: bounded by the deadline",
     function()
    local pool = pool_with_heartbeats()
    local r, err, elapsed
    H.go(function()
      assert.equal("PONG", pool:call { "PING" })
      resilnet.spawn(function()
        resilnet.sleep(0.3)
        os.execute("kill -STOP " .. redis.pid)
      end)
      local t0 = resilnet.now()
      r, err = pool:call({ "BLPOP", "q4", "30" },
                         { blocking = true, timeout = 2 })
      elapsed = resilnet.now() - t0
      os.execute("kill -CONT " .. redis.pid)
    end, 20)
    assert.is_nil(r)
    assert.equal("ETIMEDOUT", err.code)
    assert.is_true(err.maybe_executed)
    -- The call's deadline (2 s) came first: TCP_USER_TIMEOUT needs
    -- unacknowledged bytes, and a stopped process's kernel still ACKs.
    assert.is_true(elapsed >= 1.9 and elapsed < 4, "elapsed " .. elapsed)
    -- ETIMEDOUT at 2 s, not EDEADPEER within interval + timeout: the
    -- heartbeat did not judge the blocked connection's silence. Its
    -- connection was closed (the server would still pop for nobody); the
    -- pool goes on once the server runs again.
    H.go(function()
      assert.equal("PONG", pool:call { "PING" })
    end, 10)
  end)

  it("BLPOP 2 with block = 2 under 0.3 s heartbeats: not dead, answered",
     function()
    local pool = H.pool { endpoints = { redis.endpoint }, timeout = 5,
                          size = 4,
                          heartbeat = { interval = 0.1, timeout = 0.3 } }
    assert.equal(0, pool:call { "DEL", "q5", "q6", "q7" })
    local held_r, popped, batch_r, t_held
    H.go(function()
      local left = 3
      local t0 = resilnet.now()
      resilnet.spawn(function()
        -- Nothing comes: Redis answers nil once its 2 s are over.
        held_r = { pool:hold(function(conn)
          return conn:call({ "BLPOP", "q5", "2" }, { block = 2 })
        end) }
        t_held = resilnet.now() - t0
        left = left - 1
      end)
      resilnet.spawn(function()
        popped = { pool:call({ "BLPOP", "q6", "2" }, { block = 2 }) }
        left = left - 1
      end)
      resilnet.spawn(function()
        -- A batch's block too (pool:batch used to drop `blocking`).
        batch_r = { pool:batch({ { "BLPOP", "q7", "2" } }, { block = 2 }) }
        left = left - 1
      end)
      resilnet.sleep(1)
      assert.equal(1, pool:call { "LPUSH", "q6", "v" })
      while left > 0 do resilnet.sleep(0.05) end
    end, 20)
    assert.equal(null, held_r[1])
    assert.is_true(t_held >= 1.9, "answered at " .. t_held)
    assert.same({ "q6", "v" }, popped[1])
    assert.is_table(batch_r[1], tostring(batch_r[2]))
    assert.equal(null, batch_r[1][1])
    local s = pool:stats()
    assert.equal(0, s.dead_peers)
    assert.equal(0, s.evictions.dead_peer)
  end)

  it("a frozen server during BLPOP 2 with block = 2 and a 30 s deadline: "
     .. "dead about 2 s + heartbeat.timeout after the call", function()
    local pool = H.pool { endpoints = { redis.endpoint }, timeout = 5,
                          size = 4,
                          heartbeat = { interval = 0.1, timeout = 0.3 } }
    local r, err, elapsed
    H.go(function()
      assert.equal("PONG", pool:call { "PING" })
      resilnet.spawn(function()
        resilnet.sleep(0.3)
        os.execute("kill -STOP " .. redis.pid)
      end)
      r, err, elapsed = pool:hold(function(conn)
        local t0 = resilnet.now()
        local a, b = conn:call({ "BLPOP", "q8", "2" },
                               { block = 2, timeout = 30 })
        return a, b, resilnet.now() - t0
      end)
      os.execute("kill -CONT " .. redis.pid)
    end, 40)
    assert.is_nil(r)
    assert.equal("EDEADPEER", err.code)
    assert.is_true(err.maybe_executed)
    -- Not before the block and the heartbeat's timeout (2 + 0.3 s), and
    -- long before the deadline (30 s): generous, the machine is shared.
    assert.is_true(elapsed >= 2.25 and elapsed < 15, "elapsed " .. elapsed)
    assert.equal(1, pool:stats().dead_peers)
    H.go(function()
      assert.equal("PONG", pool:call { "PING" })
    end, 10)
  end)
end)
