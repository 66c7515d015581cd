-- pool:subscribe against a real redis-server (issue 19 item 4): messages
-- in order, re-subscribed by itself after SIGKILL + restart with one "gap"
-- per outage and nothing twice, an idle subscriber that heartbeats keep
-- alive, a frozen (SIGSTOP) server detected by the heartbeat, a slow
-- handler backing pressure onto the connection (and Redis closing it past
-- its output limit), a move of the pool's endpoints, a refused SUBSCRIBE.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"

-- Waits (in a task) until cond() holds, at most `seconds`.
local function wait_for(cond, seconds, what)
  local deadline = resilnet.now() + seconds
  while not cond() do
    if resilnet.now() > deadline then
      error("timed out waiting for " .. what, 2)
    end
    resilnet.sleep(0.01)
  end
end

-- A recorder handler: every call, in order.
local function recorder()
  local got = { messages = {}, gaps = {}, overflows = 0, seen = {} }
  got.handler = function(kind, a, b, c)
    if kind == "message" or kind == "pmessage" then
      got.messages[#got.messages + 1] = { kind = kind, channel = a,
                                          payload = b, pattern = c }
      got.seen[b] = (got.seen[b] or 0) + 1
    elseif kind == "gap" then
      got.gaps[#got.gaps + 1] = a
    elseif kind == "overflow" then
      got.overflows = got.overflows + 1
    end
  end
  return got
end

-- Publishes channel <- payload until a subscriber counts it (subscribing
-- is asynchronous): the payload is a probe, not part of any sequence.
local function publish_until_heard(pub, channel, got, seconds)
  local deadline = resilnet.now() + seconds
  local i = 0
  while true do
    i = i + 1
    local probe = "probe-" .. i
    pub:call { "PUBLISH", channel, probe }
    local t = resilnet.now() + 0.1
    while resilnet.now() < t do
      if got.seen[probe] then return end
      resilnet.sleep(0.01)
    end
    if resilnet.now() > deadline then
      error("the subscriber never heard " .. channel, 2)
    end
  end
end

-- The payloads of got's messages that start with prefix, in order.
local function sequence(got, prefix)
  local out = {}
  for _, m in ipairs(got.messages) do
    if m.payload:sub(1, #prefix) == prefix then
      out[#out + 1] = tonumber(m.payload:sub(#prefix + 1))
    end
  end
  return out
end

describe("pool:subscribe", function()
  if not R.installed() then
    it("needs redis-server", function() error("redis-server not installed") end)
    return
  end
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  local function launch()
    local port = R.free_port()
    return R.launch(port, {}, "/dev/null"), port
  end

  -- Most cases' set-up: a redis-server; a subscriber pool (o.pool added
  -- to its endpoint and 2 s timeout) and a publisher (o.pub_timeout, 2 s);
  -- o.got (or a new recorder) and o.handler (or the recorder's). In a
  -- task (o.task_timeout s, 30): o.before(pub), then the subscription to
  -- o.channels or o.patterns (o.max_queue), heard on o.probe (or its first
  -- channel), then body(sub, got, pub, sub_pool, redis).
  local function subscribed(o, body)
    local redis, port = launch()
    local ep = "127.0.0.1:" .. port
    local opts = { endpoints = { ep }, timeout = 2 }
    for k, v in pairs(o.pool or {}) do opts[k] = v end
    local sub_pool = H.pool(opts)
    local pub = H.pool { endpoints = { ep }, timeout = o.pub_timeout or 2 }
    local got = o.got or recorder()
    H.go(function()
      if o.before then o.before(pub) end
      local sub = sub_pool:subscribe { channels = o.channels,
                                       patterns = o.patterns,
                                       handler = o.handler or got.handler,
                                       max_queue = o.max_queue }
      publish_until_heard(pub, o.probe or o.channels[1], got, 5)
      body(sub, got, pub, sub_pool, redis)
    end, o.task_timeout or 30)
    redis:close()
  end

  it("survives SIGKILL + restart: one gap, later messages in order, "
     .. "none twice", function()
    subscribed({ pool = { heartbeat = { interval = 0.2, timeout = 0.5 },
                           reconnect = { initial = 0.02, max = 0.2 } },
                 channels = { "news" },
                 task_timeout = 60 },
      function(sub, got, pub, sub_pool, redis)
        for i = 1, 50 do pub:call { "PUBLISH", "news", "a" .. i } end
        wait_for(function() return #sequence(got, "a") == 50 end, 5,
                 "the first 50")
        redis:restart() -- SIGKILL, same port
        wait_for(function() return #got.gaps == 1 end, 10, "the gap")
        local gap = got.gaps[1]
        assert.is_true(gap.finish >= gap.start)
        for i = 1, 50 do pub:call { "PUBLISH", "news", "b" .. i } end
        wait_for(function() return #sequence(got, "b") == 50 end, 5,
                 "the 50 after the restart")
        resilnet.sleep(0.3) -- a duplicate would have come by now
        sub:close()
        assert.same(sequence(got, "a"), (function()
          local t = {} for i = 1, 50 do t[i] = i end return t end)())
        local b = sequence(got, "b")
        for i = 1, 50 do assert.equal(i, b[i]) end
        for payload, n in pairs(got.seen) do
          assert(n == 1, payload .. " delivered " .. n .. " times")
        end
        assert.equal(1, #got.gaps)
        assert.equal(2, sub:stats().connections)
      end)
  end)

  it("an idle subscriber outlives many heartbeat intervals, and pattern "
     .. "subscriptions, add and remove work", function()
    subscribed({ pool = { heartbeat = { interval = 0.05, timeout = 0.3 } },
                 patterns = { "p.*" },
                 probe = "p.x" },
      function(sub, got, pub, sub_pool)
        local before = sub_pool:stats()
        resilnet.sleep(1) -- 20 intervals with nothing published
        local after = sub_pool:stats()
        -- It pinged (subscribe mode answers ["pong", ""]) and was answered.
        assert.is_true(after.heartbeats >= before.heartbeats + 5)
        assert.equal(before.dead_peers, after.dead_peers)
        assert.equal(1, sub:stats().connections)
        assert.equal(0, #got.gaps)
        pub:call { "PUBLISH", "p.y", "after-idle" }
        wait_for(function() return got.seen["after-idle"] end, 5, "after-idle")
        local m = got.messages[#got.messages]
        assert.same({ "pmessage", "p.y", "p.*" }, { m.kind, m.channel,
                                                    m.pattern })
        sub:add { "plain" }
        publish_until_heard(pub, "plain", got, 5)
        sub:remove({}, { "p.*" })
        -- Once the removal is confirmed nothing of p.* comes; plain still.
        pub:call { "PUBLISH", "p.z", "removed" }
        pub:call { "PUBLISH", "plain", "kept" }
        wait_for(function() return got.seen["kept"] end, 5, "kept")
        assert.is_nil(got.seen["removed"])
        sub:close()
      end)
  end)

  it("a frozen server (SIGSTOP) is a dead peer; after SIGCONT it "
     .. "subscribes again with one gap", function()
    subscribed({ pool = { heartbeat = { interval = 0.1, timeout = 0.3 },
                           reconnect = { initial = 0.02, max = 0.2 } },
                 channels = { "c" },
                 pub_timeout = 5,
                 task_timeout = 40 },
      function(sub, got, pub, sub_pool, redis)
        local dead = sub_pool:stats().dead_peers
        redis:kill("STOP")
        -- (No pcall around a wait: Lua 5.1 cannot yield inside it.)
        local deadline = resilnet.now() + 10
        while sub_pool:stats().dead_peers == dead
              and resilnet.now() < deadline do
          resilnet.sleep(0.01)
        end
        local found = sub_pool:stats().dead_peers > dead
        redis:kill("CONT")
        assert(found, "no dead-peer verdict within 10 s of SIGSTOP")
        wait_for(function() return #got.gaps == 1 end, 10, "the gap")
        pub:call { "PUBLISH", "c", "after-cont" }
        wait_for(function() return got.seen["after-cont"] end, 5,
                 "after-cont")
        assert.equal(1, #got.gaps)
        sub:close()
      end)
  end)

  it("a slow handler backs pressure onto its connection: all N in order, "
     .. "none dropped, the queue never above max_queue, paused and resumed, "
     .. "not taken for dead", function()
    local got = recorder()
    local gate = false -- true: the handler waits
    local function handler(kind, a, b, c)
      got.handler(kind, a, b, c)
      while gate do resilnet.sleep(0.01) end
      if kind == "message" then resilnet.sleep(0.001) end
    end
    local max_queue = 5
    -- A paused connection's pong sits unread for far longer than the
    -- heartbeat's timeout.
    subscribed({ pool = { heartbeat = { interval = 0.05, timeout = 0.2 } },
                 channels = { "q" },
                 max_queue = max_queue,
                 got = got, handler = handler,
                 pub_timeout = 5,
                 task_timeout = 60 },
      function(sub, got, pub, sub_pool)
        local base = sub:stats()
        local dead = sub_pool:stats().dead_peers
        gate = true
        local N = 400
        local burst = {}
        for i = 1, N do burst[i] = { "PUBLISH", "q", "m" .. i } end
        pub:batch(burst)
        wait_for(function() return sub:stats().paused end, 5, "the pause")
        resilnet.sleep(1) -- five heartbeat timeouts, the handler stuck
        local s = sub:stats()
        assert.is_true(s.paused)
        assert.equal(max_queue, s.queued)
        assert.equal(dead, sub_pool:stats().dead_peers)
        gate = false
        wait_for(function() return #sequence(got, "m") == N end, 20,
                 "all " .. N)
        s = sub:stats()
        local seq = sequence(got, "m")
        for i = 1, N do assert.equal(i, seq[i]) end
        assert.equal(N, s.received - base.received)
        assert.equal(N, s.delivered - base.delivered)
        assert.is_true(s.queued_max <= max_queue,
                       "queued_max " .. s.queued_max)
        assert.is_true(s.pauses >= 1)
        assert.is_true(s.paused_time > 0)
        assert.is_false(s.paused)
        assert.equal(s.pauses, got.overflows)
        assert.equal(dead, sub_pool:stats().dead_peers)
        assert.equal(1, s.connections)
        assert.equal(0, #got.gaps)
        print(("\n[subscribe] %d messages, max_queue %d: %d pauses, "
               .. "%.2f s paused"):format(N, max_queue, s.pauses,
                                          s.paused_time))
        -- Alive and read again: the heartbeat keeps it.
        local beats = sub_pool:stats().heartbeats
        wait_for(function()
          return sub_pool:stats().heartbeats >= beats + 3
        end, 5, "heartbeats after the resume")
        assert.equal(dead, sub_pool:stats().dead_peers)
        sub:close()
      end)
  end)

  it("sub:close() while paused, the handler stuck: the handler hears "
     .. "nothing more, no task fails, the connection is closed", function()
    local got = recorder()
    local gate = false
    local function handler(kind, a, b, c)
      got.handler(kind, a, b, c)
      while gate do resilnet.sleep(0.01) end
    end
    subscribed({ channels = { "c" },
                 max_queue = 4,
                 got = got, handler = handler },
      function(sub, got, pub)
        gate = true
        local burst = {}
        for i = 1, 50 do burst[i] = { "PUBLISH", "c", "x" .. i } end
        pub:batch(burst)
        wait_for(function() return sub:stats().paused end, 5, "the pause")
        local n = #got.messages
        sub:close()
        gate = false
        resilnet.sleep(0.3) -- the drainer runs on through the closed queue
        assert.equal(n, #got.messages)
        assert.equal(0, pub:call { "PUBSUB", "NUMSUB", "c" }[2])
      end)
  end)

  it("a subscriber paused until Redis closes it (client-output-buffer-limit "
     .. "pubsub): one gap, then it recovers; what came is in order, none "
     .. "twice", function()
    local got = recorder()
    local gate = false
    local function handler(kind, a, b, c)
      got.handler(kind, a, b, c)
      while gate do resilnet.sleep(0.01) end
    end
    subscribed({ pool = { heartbeat = { interval = 0.1, timeout = 0.5 },
                           reconnect = { initial = 0.02, max = 0.2 } },
                 channels = { "big" },
                 max_queue = 4,
                 got = got, handler = handler,
                 pub_timeout = 5,
                 task_timeout = 60,
                 before = function(pub)
                   assert.equal("OK", pub:call { "CONFIG", "SET",
                     "client-output-buffer-limit", "pubsub 256kb 0 0" })
                 end },
      function(sub, got, pub)
        gate = true
        -- Past what the kernel's buffers hold, until Redis drops the
        -- subscriber: then nobody is subscribed to the channel.
        local payload = ("x"):rep(16384)
        local sent, kicked = 0, false
        local deadline = resilnet.now() + 30
        while not kicked and resilnet.now() < deadline and sent < 20000 do
          local batch = {}
          for i = 1, 16 do
            batch[i] = { "PUBLISH", "big", "k" .. (sent + i) .. ":" .. payload }
          end
          pub:batch(batch)
          sent = sent + 16
          local n = pub:call { "PUBSUB", "NUMSUB", "big" }
          kicked = n[2] == 0
        end
        assert(kicked, "Redis never closed the paused subscriber ("
                       .. sent .. " messages published)")
        assert.is_true(sub:stats().paused)
        gate = false
        wait_for(function() return #got.gaps == 1 end, 10, "the gap")
        publish_until_heard(pub, "big", got, 5)
        local s = sub:stats()
        assert.equal(1, #got.gaps)
        assert.equal(2, s.connections)
        assert.is_true(s.pauses >= 1)
        assert.is_true(s.queued_max <= 4)
        -- What arrived of the burst came in order, none twice.
        local last = 0
        for _, m in ipairs(got.messages) do
          local k = tonumber(m.payload:match("^k(%d+):"))
          if k then
            assert.is_true(k > last)
            last = k
          end
        end
        for payload_seen, n in pairs(got.seen) do
          assert(n == 1, payload_seen:sub(1, 20) .. " delivered " .. n)
        end
        print(("\n[subscribe] output limit: %d published, %d delivered before "
               .. "the close"):format(sent, last))
        sub:close()
      end)
  end)

  it("moves with its pool's endpoints (discovery): re-subscribes on the new "
     .. "server, one gap, messages published there arrive", function()
    local a_redis, a_port = launch()
    local b_redis, b_port = launch()
    local a_ep, b_ep = "127.0.0.1:" .. a_port, "127.0.0.1:" .. b_port
    local disc
    local sub_pool = H.pool {
      endpoints = function(d) disc = d; return { a_ep } end,
      timeout = 2, heartbeat = { interval = 0.1, timeout = 0.5 },
      reconnect = { initial = 0.02, max = 0.2 } }
    local pub_a = H.pool { endpoints = { a_ep }, timeout = 2 }
    local pub_b = H.pool { endpoints = { b_ep }, timeout = 2 }
    local got = recorder()
    H.go(function()
      local sub = sub_pool:subscribe { channels = { "mv" },
                                       handler = got.handler }
      publish_until_heard(pub_a, "mv", got, 5)
      -- The old server stays up (a demoted master, say): only the list
      -- moves the subscription.
      disc:publish { b_ep }
      wait_for(function() return #got.gaps == 1 end, 10, "the gap")
      for i = 1, 20 do pub_b:call { "PUBLISH", "mv", "b" .. i } end
      wait_for(function() return #sequence(got, "b") == 20 end, 5,
               "the 20 published on the new server")
      local b = sequence(got, "b")
      for i = 1, 20 do assert.equal(i, b[i]) end
      -- Nobody listens on the old one any more.
      assert.equal(0, pub_a:call { "PUBSUB", "NUMSUB", "mv" }[2])
      assert.equal(1, #got.gaps)
      assert.equal(2, sub:stats().connections)
      sub:close()
    end, 40)
    a_redis:close()
    b_redis:close()
  end)

  it("a subscription past max_lifetime keeps its connection (moving it "
     .. "would cost a gap)", function()
    subscribed({ pool = { max_lifetime = 0.2 },
                 channels = { "life" } },
      function(sub, got, pub)
        resilnet.sleep(1.5) -- the pool's maintenance runs past 0.2 s
        pub:call { "PUBLISH", "life", "later" }
        wait_for(function() return got.seen["later"] end, 5, "later")
        assert.equal(1, sub:stats().connections)
        assert.equal(0, #got.gaps)
        sub:close()
      end)
  end)

  it("a sibling connection closed by the server does not cost the "
     .. "subscriber a gap", function()
    subscribed({ channels = { "sib" } },
      function(sub, got, admin, pool)
        -- A plain call's connection: the subscriber's is held, so the call
        -- takes another one on the same endpoint.
        local id = assert(pool:call { "CLIENT", "ID" })
        assert.equal(1, admin:call { "CLIENT", "KILL", "ID", tostring(id) })
        wait_for(function()
          return pool:stats().evictions.peer_closed >= 1
        end, 5, "the sibling's close")
        admin:call { "PUBLISH", "sib", "after" }
        wait_for(function() return got.seen["after"] end, 5, "after")
        assert.equal(0, #got.gaps)
        assert.equal(1, sub:stats().connections)
        sub:close()
      end)
  end)

  it("a SUBSCRIBE the connection cannot send (past max_frame) is an error "
     .. "to the handler, paced, not a reconnect storm", function()
    local redis, port = launch()
    local ep = "127.0.0.1:" .. port
    local pool = H.pool { endpoints = { ep }, timeout = 2, max_frame = 256 }
    local errors, channels = {}, {}
    for i = 1, 40 do channels[i] = ("channel-%02d"):format(i) end
    H.go(function()
      local sub = pool:subscribe { channels = channels,
        handler = function(kind, a)
          if kind == "error" then errors[#errors + 1] = a end
        end }
      resilnet.sleep(1.5)
      local connects = pool:stats().connects
      -- Paced as a refusal: 0.05 s doubling to 1 s, about five tries.
      assert.is_true(connects <= 12, "connects: " .. connects)
      assert.is_true(#errors >= 2, "errors: " .. #errors)
      assert.equal("EFRAMESIZE", errors[1].code)
      assert.equal(#errors, sub:stats().refused)
      assert.equal(0, sub:stats().connections)
      sub:close()
    end, 30)
    redis:close()
  end)

  it("RESP3 (HELLO 3 in setup): push frames, pings answered +PONG, "
     .. "SIGKILL + restart with one gap", function()
    local redis, port = launch()
    local ep = "127.0.0.1:" .. port
    local sub_pool = H.pool { endpoints = { ep }, timeout = 2,
                              setup = { { "HELLO", "3" } },
                              heartbeat = { interval = 0.05, timeout = 0.5 },
                              reconnect = { initial = 0.02, max = 0.2 } }
    local pub = H.pool { endpoints = { ep }, timeout = 2 }
    local got = recorder()
    H.go(function()
      local sub = sub_pool:subscribe { channels = { "r3" },
                                       handler = got.handler }
      publish_until_heard(pub, "r3", got, 5)
      local before = sub_pool:stats()
      resilnet.sleep(0.5)
      local after = sub_pool:stats()
      assert.is_true(after.heartbeats >= before.heartbeats + 3)
      assert.equal(before.dead_peers, after.dead_peers)
      redis:restart()
      wait_for(function() return #got.gaps == 1 end, 10, "the gap")
      for i = 1, 20 do pub:call { "PUBLISH", "r3", "c" .. i } end
      wait_for(function() return #sequence(got, "c") == 20 end, 5,
               "the 20 after the restart")
      local c = sequence(got, "c")
      for i = 1, 20 do assert.equal(i, c[i]) end
      assert.equal(1, #got.gaps)
      sub:close()
    end, 40)
    redis:close()
  end)

  it("bad options are named", function()
    local pool = H.pool { endpoints = { "127.0.0.1:1" } }
    assert.has_error(function() pool:subscribe { channels = { "a" } } end,
      "pool:subscribe: option 'handler' must be a function, got nil")
    assert.has_error(function()
      pool:subscribe { handler = print, max_queue = 0 }
    end, "pool:subscribe: option 'max_queue' must be a positive integer, "
         .. "got 0")
    assert.has_error(function()
      pool:subscribe { handler = print, channels = { 1 } }
    end, "pool:subscribe: option 'channels' [1] must be a string, got number")
    assert.has_error(function()
      pool:subscribe { handler = print, chanels = { "a" } }
    end, "pool:subscribe: unknown option 'chanels'")
  end)
end)

describe("pool:subscribe refused by the server", function()
  if not R.installed() then return end
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  -- A SUBSCRIBE answered -NOPERM (the user may use no channel): the
  -- handler hears it, the subscription neither spins nor stays deaf once
  -- the permission comes back, and needs no new connection for it.
  it("an ACL that forbids the channel: an error event, paced retries on "
     .. "the same connection, then it works", function()
    local port = R.free_port()
    local redis = R.launch(port, {}, "/dev/null")
    local ep = "127.0.0.1:" .. port
    local admin = H.pool { endpoints = { ep }, timeout = 2 }
    local sub_pool = H.pool { endpoints = { ep }, timeout = 2,
                              heartbeat = { interval = 0.1, timeout = 0.5 } }
    local got = recorder()
    local errors = {}
    local function handler(kind, a, ...)
      if kind == "error" then errors[#errors + 1] = a end
      got.handler(kind, a, ...)
    end
    H.go(function()
      assert.equal("OK", admin:call { "ACL", "SETUSER", "default",
                                      "resetchannels" })
      local sub = sub_pool:subscribe { channels = { "locked" },
                                       handler = handler }
      resilnet.sleep(1.5)
      local s = sub:stats()
      print("\n[subscribe] refusals in 1.5 s: " .. s.refused)
      assert(s.refused >= 1 and s.refused <= 8,
             "refusals in 1.5 s: " .. s.refused)
      assert.equal(s.refused, #errors)
      assert.equal("EREPLY", errors[1].code)
      assert.truthy(errors[1].message:find("NOPERM", 1, true))
      assert.equal(1, s.connections)
      assert.equal(s.queued_max <= 1000, true)
      assert.equal(0, sub_pool:stats().dead_peers)
      assert.equal("OK", admin:call { "ACL", "SETUSER", "default",
                                      "allchannels" })
      publish_until_heard(admin, "locked", got, 10)
      assert.equal(1, sub:stats().connections)
      assert.equal(0, #got.gaps) -- never subscribed before: nothing lost
      sub:close()
    end, 40)
    redis:close()
  end)
end)
