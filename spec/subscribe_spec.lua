-- pool:subscribe against a real redis-server (issue 19 item 4): messages
-- in order, re-subscribed by itself after SIGKILL + restart with one "gap"
-- per outage and nothing twice, an idle subscriber that heartbeats keep
-- alive, a frozen (SIGSTOP) server detected by the heartbeat, a bounded
-- queue behind a slow handler.
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

  it("survives SIGKILL + restart: one gap, later messages in order, "
     .. "none twice", function()
    local redis, port = launch()
    local ep = "127.0.0.1:" .. port
    local sub_pool = H.pool { endpoints = { ep }, timeout = 2,
                              heartbeat = { interval = 0.2, timeout = 0.5 },
                              reconnect = { initial = 0.02, max = 0.2 } }
    local pub = H.pool { endpoints = { ep }, timeout = 2 }
    local got = recorder()
    H.go(function()
      local sub = sub_pool:subscribe { channels = { "news" },
                                       handler = got.handler }
      publish_until_heard(pub, "news", got, 5)
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
    end, 60)
    redis:close()
  end)

  it("an idle subscriber outlives many heartbeat intervals, and pattern "
     .. "subscriptions, add and remove work", function()
    local redis, port = launch()
    local ep = "127.0.0.1:" .. port
    local sub_pool = H.pool { endpoints = { ep }, timeout = 2,
                              heartbeat = { interval = 0.05, timeout = 0.3 } }
    local pub = H.pool { endpoints = { ep }, timeout = 2 }
    local got = recorder()
    H.go(function()
      local sub = sub_pool:subscribe { patterns = { "p.*" },
                                       handler = got.handler }
      publish_until_heard(pub, "p.x", got, 5)
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
    end, 30)
    redis:close()
  end)

  it("a frozen server (SIGSTOP) is a dead peer; after SIGCONT it "
     .. "subscribes again with one gap", function()
    local redis, port = launch()
    local ep = "127.0.0.1:" .. port
    local sub_pool = H.pool { endpoints = { ep }, timeout = 2,
                              heartbeat = { interval = 0.1, timeout = 0.3 },
                              reconnect = { initial = 0.02, max = 0.2 } }
    local pub = H.pool { endpoints = { ep }, timeout = 5 }
    local got = recorder()
    H.go(function()
      local sub = sub_pool:subscribe { channels = { "c" },
                                       handler = got.handler }
      publish_until_heard(pub, "c", got, 5)
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
    end, 40)
    redis:close()
  end)

  it("a slow handler: the queue is bounded, overflow is an event and a "
     .. "stat", function()
    local redis, port = launch()
    local ep = "127.0.0.1:" .. port
    local sub_pool = H.pool { endpoints = { ep }, timeout = 2 }
    local pub = H.pool { endpoints = { ep }, timeout = 2 }
    local got = recorder()
    local slow = false
    local function handler(kind, a, b, c)
      got.handler(kind, a, b, c)
      if slow and kind == "message" then resilnet.sleep(0.05) end
    end
    H.go(function()
      local sub = sub_pool:subscribe { channels = { "q" }, handler = handler,
                                       max_queue = 5 }
      publish_until_heard(pub, "q", got, 5)
      local base = sub:stats()
      slow = true
      local N = 40
      local burst = {}
      for i = 1, N do burst[i] = { "PUBLISH", "q", "m" .. i } end
      pub:batch(burst)
      wait_for(function()
        local s = sub:stats()
        return s.received - base.received == N and s.queued == 0
      end, 10, "the burst drained")
      local s = sub:stats()
      assert.is_true(s.dropped > 0)
      assert.equal(N, (s.delivered - base.delivered) + s.dropped)
      assert.equal(1, got.overflows)
      assert.equal(1, s.overflows)
      -- What came is in order.
      local seq = sequence(got, "m")
      for i = 2, #seq do assert.is_true(seq[i] > seq[i - 1]) end
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
  -- subscription must neither spin reconnecting nor stay deaf once the
  -- permission comes back.
  it("an ACL that forbids the channel: paced retries, then it works",
     function()
    local port = R.free_port()
    local redis = R.launch(port, {}, "/dev/null")
    local ep = "127.0.0.1:" .. port
    local admin = H.pool { endpoints = { ep }, timeout = 2 }
    local sub_pool = H.pool { endpoints = { ep }, timeout = 2,
                              heartbeat = { interval = 0.1, timeout = 0.5 } }
    local got = recorder()
    H.go(function()
      assert.equal("OK", admin:call { "ACL", "SETUSER", "default",
                                      "resetchannels" })
      local sub = sub_pool:subscribe { channels = { "locked" },
                                       handler = got.handler }
      resilnet.sleep(1.5)
      local tries = sub:stats().connections
      print("\n[subscribe] connections during refusals: " .. tries)
      assert(tries >= 1 and tries <= 12,
             "connections in 1.5 s of refusals: " .. tries)
      assert.equal("OK", admin:call { "ACL", "SETUSER", "default",
                                      "allchannels" })
      publish_until_heard(admin, "locked", got, 10)
      sub:close()
    end, 40)
    redis:close()
  end)
end)
