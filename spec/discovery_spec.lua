-- Discovery as a task (lua/resilnet/discovery.lua): an endpoints function
-- that waits (it calls another pool, or sleeps), single flight, the
-- deadline, failures reported while the old list stays, the first list at
-- creation (a function that answers at once and one that waits), and a
-- pool closed while its discovery runs.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

-- Waits (in a task) until cond() or seconds pass; true if cond() held.
local function wait_for(cond, seconds)
  local deadline = resilnet.now() + seconds
  while not cond() do
    if resilnet.now() > deadline then return false end
    resilnet.sleep(0.01)
  end
  return true
end

describe("discovery", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("a function that answers at once gives the first list at creation, "
     .. "synchronously, with d.reason 'create'", function()
    local _, ep = H.server { protocol = "line" }
    local reasons = {}
    local pool = H.pool { protocol = "line", endpoints = function(d)
      reasons[#reasons + 1] = d.reason
      return { ep }
    end }
    assert.same({ "create" }, reasons)
    assert.equal("x", pool:call("x"))
    local s = pool:stats().discovery
    assert.equal(1, s.runs)
    assert.equal(0, s.failures)
    assert.same({ ep }, s.endpoints)
  end)

  it("a function that waits (it asks another pool) is waited for at "
     .. "creation, in a task and outside the loop", function()
    local _, ep = H.server { protocol = "line" }
    -- A "registry": a line server that answers any request with ep.
    local _, registry_ep = H.server { protocol = "line",
                                      handler = function() return ep end }
    local registry = H.pool { protocol = "line", endpoints = { registry_ep } }
    local function discover()
      local reply, err = registry:call("where")
      if not reply then return nil, err end
      resilnet.sleep(0.05) -- and it takes its time
      return { reply }
    end
    -- Outside any task: creation drives the loop until the answer.
    local t0 = resilnet.now()
    local pool = H.pool { protocol = "line", endpoints = discover }
    assert.is_true(resilnet.now() - t0 >= 0.04)
    assert.equal("a", pool:call("a"))
    -- In a task: creation yields.
    H.go(function()
      local p2 = H.pool { protocol = "line", endpoints = discover }
      assert.equal("b", p2:call("b"))
      assert.same({ ep }, p2:stats().discovery.endpoints)
    end, 10)
  end)

  it("a waiting function at creation from a plain callback raises, and "
     .. "what it started is closed", function()
    local _, ep = H.server { protocol = "line" }
    local base = H.pool { protocol = "line", endpoints = { ep } }
    local err, closed
    base:send("x", function()
      local ok, e = pcall(resilnet.pool, { protocol = "line",
        endpoints = function(d)
          d:on_close(function() closed = true end)
          resilnet.sleep(0.01)
          return { ep }
        end })
      err = not ok and e
    end)
    H.go(function()
      for _ = 1, 200 do
        if err then break end
        resilnet.sleep(0.01)
      end
    end)
    assert.matches("resilnet.pool: the endpoints function waits, which a "
                   .. "callback cannot", err)
    assert.is_true(closed)
  end)

  it("creation returns nil, err when the first run fails at run time, and "
     .. "raises when the function raises or returns garbage", function()
    local p, err = resilnet.pool { protocol = "line", discovery_timeout = 0.1,
      endpoints = function() resilnet.sleep(0.5); return { "x:1" } end }
    assert.is_nil(p)
    assert.matches("discovery_timeout", err)
    p, err = resilnet.pool { protocol = "line",
      endpoints = function() return nil, "registry down" end }
    assert.is_nil(p)
    assert.matches("registry down", err)
    assert.has_error(function()
      resilnet.pool { protocol = "line", endpoints = function() return 42 end }
    end, "resilnet.pool: discovery failed: the endpoints function returned "
      .. "number, not a non-empty array of strings")
    local ok, e = pcall(resilnet.pool, { protocol = "line",
      endpoints = function() error("typo in my code") end })
    assert.is_false(ok)
    assert.matches("typo in my code", e)
    assert.has_error(function()
      resilnet.pool { protocol = "line", endpoints = function() return {} end,
                      discovery_timeout = 0 }
    end, "resilnet.pool: option 'discovery_timeout' must be a number > 0, "
      .. "got 0")
    assert.has_error(function()
      resilnet.pool { protocol = "line", endpoints = function() return {} end,
                      discovery_jitter = "1" }
    end, "resilnet.pool: option 'discovery_jitter' must be a number >= 0, "
      .. "got '1'")
  end)

  it("single flight: resolves asked while a run waits join it; its answer "
     .. "moves the pool; the event says how long and that it changed",
     function()
    local _, a = H.server { protocol = "line" }
    local _, b = H.server { protocol = "line" }
    local current, started, release = a, 0, false
    local pool = H.pool { protocol = "line", resolve_ttl = 0,
      endpoints = function(d)
        started = started + 1
        if d.reason ~= "create" then
          while not release do resilnet.sleep(0.01) end
        end
        return { current }
      end }
    local events = {}
    pool:on("discovery", function(ev) events[#events + 1] = ev end)
    H.go(function()
      local d = pool._discovery
      current = b
      d:run("connect_failure")
      d:run("connect_failure") -- joins
      d:run("ttl")             -- joins
      assert.equal(2, started)
      assert.is_true(pool:stats().discovery.running)
      resilnet.sleep(0.1)
      release = true
      assert.is_true(wait_for(function() return #events >= 1 end, 5))
      assert.equal(2, started)
      local ev = events[1]
      assert.is_true(ev.ok)
      assert.is_true(ev.changed)
      assert.equal("connect_failure", ev.reason)
      assert.is_true(ev.duration >= 0.09, tostring(ev.duration))
      assert.same({ b }, ev.endpoints)
      assert.is_true(wait_for(function()
        local eps = pool:stats().endpoints
        return #eps == 1 and eps[1].endpoint == b
      end, 5))
      assert.equal("y", pool:call("y"))
      -- The same list again: not changed.
      d:run("connect_failure")
      assert.is_true(wait_for(function() return #events >= 2 end, 5))
      assert.is_true(events[2].ok)
      assert.is_false(events[2].changed)
      local s = pool:stats().discovery
      assert.equal(3, s.runs)
      assert.equal(1, s.changes)
    end, 15)
  end)

  it("failures are events and the old list stays in use: an error raised, "
     .. "nil, err, a bad list, an endpoint without a port, the deadline",
     function()
    local _, ep = H.server { protocol = "line" }
    local mode = "ok"
    local pool = H.pool { protocol = "line", resolve_ttl = 0,
                          discovery_timeout = 0.2,
      endpoints = function()
        if mode == "raise" then error("boom") end
        if mode == "nil" then return nil, "registry down" end
        if mode == "bad" then return { 1, 2 } end
        if mode == "no_port" then return { "127.0.0.1" } end
        if mode == "hang" then resilnet.sleep(1) end
        return { ep }
      end }
    local events = {}
    pool:on("discovery", function(ev) events[#events + 1] = ev end)
    H.go(function()
      local d = pool._discovery
      local want = { raise = "boom", ["nil"] = "registry down",
                     bad = "not a non%-empty array", hang = "discovery_timeout",
                     no_port = "127%.0%.0%.1" }
      local n = 0
      for _, m in ipairs { "raise", "nil", "bad", "no_port", "hang" } do
        mode = m
        d:run("connect_failure")
        n = n + 1
        assert.is_true(wait_for(function() return #events >= n end, 5), m)
        local ev = events[n]
        assert.is_false(ev.ok, m)
        assert.matches(want[m], ev.error)
        assert.equal("x" .. m, pool:call("x" .. m)) -- the old list works
      end
      -- The hung run's late answer, once it comes, is ignored (no event).
      mode = "ok"
      resilnet.sleep(1)
      assert.equal(5, #events)
      local s = pool:stats().discovery
      assert.equal(5, s.failures)
      assert.is_true(s.max_duration >= 0.19)
      assert.same({ ep }, s.endpoints)
    end, 15)
  end)

  it("ttl runs start after a jitter of at most discovery_jitter", function()
    local _, ep = H.server { protocol = "line" }
    local pool = H.pool { protocol = "line", resolve_ttl = 0,
                          discovery_jitter = 0.3,
                          endpoints = function() return { ep } end }
    local events = {}
    pool:on("discovery", function(ev) events[#events + 1] = ev end)
    H.go(function()
      local d = pool._discovery
      local delays = {}
      for i = 1, 5 do
        local t0 = resilnet.now()
        d:run("ttl")
        assert.is_true(wait_for(function() return #events >= i end, 5))
        delays[i] = resilnet.now() - t0
      end
      local lo, hi = math.huge, 0
      for _, v in ipairs(delays) do
        lo, hi = math.min(lo, v), math.max(hi, v)
      end
      -- Random in [0, 0.3] s (plus the loop's lateness): not all alike.
      assert.is_true(hi <= 1.5, tostring(hi))
      assert.is_true(hi - lo > 0.005, ("%g..%g"):format(lo, hi))
    end, 15)
  end)

  it("a pool closed while its discovery waits: no error, no event, the "
     .. "late answer goes nowhere, run() returns", function()
    local _, ep = H.server { protocol = "line" }
    local finished = false
    local pool = resilnet.pool { protocol = "line", resolve_ttl = 0,
      endpoints = function(d)
        if d.reason ~= "create" then
          resilnet.sleep(0.2)
          finished = true
        end
        return { ep }
      end }
    local events = 0
    pool:on("discovery", function() events = events + 1 end)
    local closed_hooks = 0
    pool._discovery:on_close(function() closed_hooks = closed_hooks + 1 end)
    H.go(function()
      pool._discovery:run("connect_failure")
      pool:close()
      assert.equal(1, closed_hooks)
      assert.is_true(wait_for(function() return finished end, 5))
      resilnet.sleep(0.05)
      assert.equal(0, events)
      assert.is_false(pool._discovery:is_open())
    end, 10)
  end)

  it("the deadline timer never keeps resilnet.run() going", function()
    local srv = assert(resilnet.server { protocol = "line",
                                         listen = "127.0.0.1:0",
                                         handler = function(r) return r end })
    local host, port = srv:address()
    local pool = resilnet.pool { protocol = "line", discovery_timeout = 60,
      endpoints = function() return { host .. ":" .. port } end }
    local t0 = resilnet.now()
    local reply
    -- The server keeps the loop alive until this task closes it; then
    -- only the weak 60 s deadline timer is left, and run() returns.
    resilnet.spawn(function()
      reply = pool:call("x")
      pool:close()
      srv:close()
    end)
    resilnet.run()
    assert.equal("x", reply)
    assert.is_true(resilnet.now() - t0 < 10)
  end)
end)
