-- resilnet.step(), resilnet.pollfd() and resilnet.timeout(): driving
-- resilnet's own loop from a host's scheduler (issue 21). Here the host
-- is plain luasocket select(); spec/cqueues_spec.lua and
-- spec/copas_spec.lua use real ones.
local resilnet = require "resilnet"
local socket = require "socket"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"

-- resilnet's descriptor, as select() takes it.
local descriptor = { getfd = function() return resilnet.pollfd() end }

-- Earlier specs in the same process may leave work finishing (a close's
-- drain, a server's last timers): the cases that read timeout() or time
-- step() start from a loop with no timer of anyone else's. Bounded: 10 s.
local function quiet_loop()
  for _ = 1, 100 do
    collectgarbage()
    collectgarbage()
    if resilnet.timeout() == nil then return end
    resilnet.step(0.1)
  end
  error("the loop never went quiet: timeout() = "
        .. tostring(resilnet.timeout()))
end

describe("resilnet.step", function()
  after_each(H.cleanup)

  it("says which loop resilnet runs on", function()
    assert.equals("own", resilnet.loop())
    resilnet.use_loop("own") -- the current one: nothing to do
    assert.equals("own", resilnet.loop())
  end)

  it("step(0) runs due tasks without blocking", function()
    local ran = false
    resilnet.spawn(function() ran = true end)
    assert.equals(0, resilnet.timeout())
    local t0 = resilnet.now()
    resilnet.step(0)
    assert.is_true(ran, "the spawned task did not run in step(0)")
    assert.is_true(resilnet.now() - t0 < 1, tostring(resilnet.now() - t0))
  end)

  it("step(t) blocks at most about t seconds", function()
    quiet_loop()
    local woke = false
    resilnet.spawn(function() resilnet.sleep(5); woke = true end)
    resilnet.step(0) -- starts the task: it sleeps
    local left = resilnet.timeout()
    assert.is_true(left > 3 and left <= 5, tostring(left))
    local t0 = resilnet.now()
    local alive = resilnet.step(0.05)
    local took = resilnet.now() - t0
    assert.is_true(alive, "step() said no work is left") -- the sleeper
    assert.is_false(woke, "the 5 s sleep ended in step(0.05)")
    assert.is_true(took >= 0.045, tostring(took))
    assert.is_true(took < 2.5, tostring(took)) -- bounded, not 5 s
    -- Let the task finish (bounded), leaving the loop empty.
    for _ = 1, 100 do
      if woke then break end
      resilnet.step(0.2)
    end
    assert.is_true(woke, "the 5 s sleep never ended")
  end)

  it("re-raises a task's error", function()
    resilnet.spawn(function() error("boom in a stepped task") end)
    local ok, err = pcall(resilnet.step, 0)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("boom in a stepped task", 1, true))
  end)

  it("replies wake a select() on pollfd(), bounded by timeout()", function()
    local redis = assert(R.start())
    local pool = H.pool { endpoints = { redis.endpoint }, protocol = "resp",
                          timeout = 5 }
    local replies, turns = 0, 0
    resilnet.spawn(function()
      for _ = 1, 5 do
        -- Answered by redis-server 50 to 100 ms later (it times out).
        assert(pool:call { "BLPOP", "step_spec_empty", "0.05" }
               == resilnet.null)
        replies = replies + 1
      end
    end)
    local t0 = resilnet.now()
    -- Each reply arrives while select() waits: the descriptor wakes it
    -- (select returns it readable), not the timeout. (One might come in
    -- the instant between a wake by a timer and the step after it.)
    local fd_wakes = 0
    local ok, err = pcall(function()
      while replies < 5 and turns < 10000 and resilnet.now() - t0 < 30 do
        local t = resilnet.timeout()
        local readable = socket.select({ descriptor }, nil, t or 30)
        if readable[1] then fd_wakes = fd_wakes + 1 end
        resilnet.step(0)
        turns = turns + 1
      end
    end)
    R.stop(redis)
    assert(ok, err)
    assert.equals(5, replies)
    assert.is_true(fd_wakes >= 4, "select() woke on the descriptor "
                   .. fd_wakes .. " times for 5 replies")
  end)

  it("timeout() is nil when nothing but the descriptor matters", function()
    quiet_loop()
    resilnet.step(0)
    assert.is_nil(resilnet.timeout())
    assert.is_number(resilnet.pollfd())
    assert.is_true(resilnet.pollfd() >= 0, tostring(resilnet.pollfd()))
  end)

  it("raises on bad use", function()
    assert.has_error(function() resilnet.step(-1) end,
                     "resilnet.step: expected seconds >= 0, got -1")
    assert.has_error(function() resilnet.use_loop("bogus") end,
                     'resilnet.use_loop: expected "own" or "luv", got bogus')
    local err
    H.go(function()
      local ok, e = pcall(resilnet.step, 0)
      err = not ok and e
    end)
    assert.truthy(tostring(err):find("cannot be called from inside a task",
                                     1, true), tostring(err))
  end)
end)
