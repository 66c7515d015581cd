-- Tasks, the loop and errors: resilnet.spawn/run/sleep/now.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

describe("concurrency", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("has a version and a null", function()
    assert.matches("^resilnet %d+%.%d+%.%d+$", resilnet._VERSION)
    assert.equal("userdata", type(resilnet.null))
    assert.equal(resilnet.null, require("resilnet.core").null)
  end)

  it("runs spawned tasks on the next loop turn, in order, with arguments",
     function()
    local order = {}
    resilnet.spawn(function(a, b) order[#order + 1] = a .. b end, "x", 1)
    resilnet.spawn(function() order[#order + 1] = "y" end)
    assert.same({}, order) -- nothing runs before the loop does
    resilnet.run()
    assert.same({ "x1", "y" }, order)
  end)

  it("returns from run() when no work is left", function()
    local t0 = resilnet.now()
    resilnet.run()
    resilnet.spawn(function() end)
    resilnet.run()
    assert.is_true(resilnet.now() - t0 < 1)
  end)

  it("wakes sleeping tasks in deadline order, never early", function()
    local order, t0 = {}, resilnet.now()
    local function sleeper(name, s)
      resilnet.sleep(s)
      order[#order + 1] = name
      assert.is_true(resilnet.now() - t0 >= s - 0.001, name .. " woke early")
    end
    resilnet.spawn(sleeper, "slow", 0.06)
    resilnet.spawn(sleeper, "fast", 0.02)
    resilnet.spawn(sleeper, "mid", 0.04)
    resilnet.run()
    assert.same({ "fast", "mid", "slow" }, order)
  end)

  it("sleeps outside a task by running the loop, and tasks progress",
     function()
    local ran = false
    resilnet.spawn(function() ran = true end)
    local t0 = resilnet.now()
    resilnet.sleep(0.03)
    assert.is_true(ran)
    assert.is_true(resilnet.now() - t0 >= 0.029)
  end)

  it("does not wake early after time spent outside the loop", function()
    resilnet.sleep(0)
    local busy = resilnet.now() + 0.03
    while resilnet.now() < busy do end -- the loop's clock goes stale
    local t0 = resilnet.now()
    resilnet.sleep(0.02)
    assert.is_true(resilnet.now() - t0 >= 0.019)
  end)

  it("has a monotonic float clock", function()
    local a = resilnet.now()
    local b = resilnet.now()
    assert.equal("number", type(a))
    assert.is_true(b >= a)
  end)

  it("re-raises an error of a task from run(), with its traceback",
     function()
    local function inner() error("boom in task") end
    resilnet.spawn(function() inner() end)
    local ok, err = pcall(resilnet.run)
    assert.is_false(ok)
    assert.matches("boom in task", err)
    assert.matches("stack traceback", err)
    assert.matches("inner", err)
    resilnet.run() -- the error was consumed; the loop is usable again
  end)

  it("keeps the first error and lets other tasks carry on afterwards",
     function()
    local later = false
    resilnet.spawn(function() error("first") end)
    resilnet.spawn(function() error("second") end)
    resilnet.spawn(function() resilnet.sleep(0.01); later = true end)
    local ok, err = pcall(resilnet.run)
    assert.is_false(ok)
    assert.matches("first", err)
    resilnet.run()
    assert.is_true(later)
  end)

  it("re-raises non-string errors as they are", function()
    local value = { why = "table error" }
    resilnet.spawn(function() error(value) end)
    local ok, err = pcall(resilnet.run)
    assert.is_false(ok)
    assert.equal(value, err)
  end)

  it("re-raises an error of a callback from run()", function()
    local _, ep = H.server { protocol = "line" }
    local pool = H.pool { endpoints = { ep }, protocol = "line" }
    assert.is_true(pool:send("x", nil, function()
      error("boom in callback")
    end))
    local ok, err = pcall(H.go, function() resilnet.sleep(0.2) end)
    assert.is_false(ok)
    assert.matches("boom in callback", err)
    assert.matches("stack traceback", err)
  end)

  it("refuses to wait inside a plain callback", function()
    local _, ep = H.server { protocol = "line" }
    local pool = H.pool { endpoints = { ep }, protocol = "line" }
    local called = false
    pool:send("x", nil, function()
      called = true
      resilnet.sleep(0.01)
    end)
    local ok, err = pcall(H.go, function() resilnet.sleep(0.2) end)
    assert.is_true(called)
    assert.is_false(ok)
    assert.matches("cannot wait inside a callback; use resilnet.spawn", err)
  end)

  it("refuses run() from inside a task", function()
    local caught
    resilnet.spawn(function()
      local ok, err = pcall(resilnet.run)
      caught = not ok and err
    end)
    resilnet.run()
    assert.matches("cannot be called from inside a task", caught)
  end)

  it("rejects bad arguments at once", function()
    assert.has_error(function() resilnet.spawn(42) end,
                     "resilnet.spawn: expected a function, got number")
    assert.has_error(function() resilnet.sleep(-1) end)
    assert.has_error(function() resilnet.sleep("1") end)
  end)

  it("runs many tasks that wait on each other's timers", function()
    local n, done = 2000, 0
    for i = 1, n do
      resilnet.spawn(function()
        resilnet.sleep((i % 7) / 1000)
        resilnet.sleep(0)
        done = done + 1
      end)
    end
    resilnet.run()
    assert.equal(n, done)
  end)
end)
