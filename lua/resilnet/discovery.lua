-- resilnet.discovery: a pool's `endpoints` function, run as a task.
--
-- The core asks for a fresh endpoint list through its "resolve" event
-- (after a connect failure, every resolve_ttl); the function answering may
-- wait (it runs in a task of its own, so it may call other pools, sleep,
-- ...). One runner per pool:
--  * single flight: a resolve asked while a run is going joins it;
--  * a deadline (discovery_timeout): past it the run is abandoned, its late
--    answer ignored, and the next resolve starts a new one;
--  * jitter (discovery_jitter): a run asked by the ttl starts after a
--    random delay, so that many processes do not ask their Sentinels or
--    DNS in the same instant; a connect failure is answered at once;
--  * a failure (the function raised, returned nil, err or a bad list, or
--    ran past the deadline) is a "discovery" event with ok = false while
--    the old list stays in use; a success is one with the duration and
--    whether the list changed.
-- Its deadline and jitter timers are weak (they never keep resilnet.run()
-- going by themselves).
--
-- The function is called as fn(d), d being the runner: d.reason says why
-- it runs ("create", "ttl", "connect_failure", ...); d:publish(list) sets
-- a new list at once from outside a run (a push from a subscription);
-- d:emit(ev) delivers an event on the pool; d:on_close(f) runs f when the
-- pool closes. Functions that take no argument keep working.
--
-- Returns a constructor: build(core, T) -> { new = runner constructor }.
local opt = require "resilnet.options"

local coroutine, error, math, pairs, setmetatable, tostring, type =
      coroutine, error, math, pairs, setmetatable, tostring, type

return function(core, T)
  local D = {}
  local tasks, now, await = T.tasks, T.now, T.await

  local Runner = {}
  Runner.__index = Runner

  -- nil, or why list cannot be an endpoint list.
  local function bad_list(list)
    if type(list) ~= "table" or not opt.types.endpoints[2](list) then
      return "the endpoints function returned " .. type(list)
        .. ", not a non-empty array of strings"
    end
    return nil
  end

  local function same_list(a, b)
    if a == nil or #a ~= #b then return false end
    for i = 1, #a do
      if a[i] ~= b[i] then return false end
    end
    return true
  end

  local function copy(list)
    local out = {}
    for i = 1, #list do out[i] = list[i] end
    return out
  end

  -- A task or a function waiting for something, handed results.
  local function wake(target, ...)
    if type(target) == "thread" then
      return T.resume(target, ...)
    end
    return target(...)
  end

  --- new(fn, timeout_s, jitter_s, sink) -> runner. sink(kind, ...) is how
  -- results reach the pool: sink("apply", list) -> true | nil, err sets
  -- the list, sink("event", ev) delivers an event. Both may be called
  -- before the pool exists (its first run): the sink then ignores them.
  function D.new(fn, timeout, jitter, sink)
    return setmetatable({
      fn = fn, timeout_ms = math.ceil(timeout * 1000),
      jitter_ms = math.ceil(jitter * 1000), sink = sink,
      gen = 0, running = nil, closed = false, current = nil,
      closers = {},
      stats = { runs = 0, failures = 0, changes = 0, failovers = 0,
                running = false,
                last_duration = 0, max_duration = 0, last_error = false },
    }, Runner)
  end

  -- The end of run gen: ok with a list, or a failure. Late (an abandoned
  -- run, or the pool closed): ignored.
  function Runner:_finish(gen, ok, list, err)
    local run = self.running
    if run == nil or run.gen ~= gen or self.closed then
      return
    end
    self.running = nil
    local s = self.stats
    s.running = false
    local duration = now() - run.started
    local kind = run.raised and "raised" or "runtime"
    if ok then
      err = bad_list(list)
      ok = err == nil
      if not ok then kind = "bad_list" end
    end
    s.runs = s.runs + 1
    s.last_duration = duration
    if duration > s.max_duration then s.max_duration = duration end
    local changed = false
    if ok then
      -- An endpoint the pool cannot parse ("host" without a port, say)
      -- makes set_endpoints raise: from a run, that is a failed run (an
      -- event, the old list kept), not an error out of resilnet.run().
      local list_copy = copy(list)
      local called, applied, why = pcall(self.sink, "apply", list_copy)
      if not called or not applied then
        ok, err = false, tostring(called and why or applied)
        kind = "bad_list"
      else
        -- The first list is not a change: there was none to change.
        changed = self.current ~= nil and not same_list(self.current, list)
        self.current = list_copy
        if changed then s.changes = s.changes + 1 end
      end
    end
    if not ok then
      s.failures = s.failures + 1
      s.last_error = tostring(err)
      self.last_kind = kind
    end
    self.sink("event", { type = "discovery", ok = ok, reason = run.reason,
                         duration = duration, changed = ok and changed,
                         error = not ok and tostring(err) or nil,
                         endpoints = ok and copy(list) or nil })
    local waiters = run.waiters
    for i = 1, #waiters do
      wake(waiters[i], ok and list or nil, not ok and tostring(err) or nil)
    end
  end

  function Runner:_start(gen)
    local run = self.running
    if run == nil or run.gen ~= gen or self.closed then return end
    run.started = now()
    local runner, fn = self, self.fn
    local co = coroutine.create(function()
      return fn(runner)
    end)
    tasks[co] = { done = function(_, ok, list, err)
      if not ok then
        -- The function raised: list is the error.
        if runner.running and runner.running.gen == gen then
          runner.running.raised = true
        end
        return runner:_finish(gen, false, nil, list)
      end
      if list == nil then
        return runner:_finish(gen, false, nil,
                              err or "the endpoints function returned nil")
      end
      return runner:_finish(gen, true, list)
    end }
    -- The deadline: a weak timer, harmless when the run ended before it.
    core.after(self.timeout_ms, function()
      if self.running and self.running.gen == gen then
        self:_finish(gen, false, nil, "discovery_timeout: no answer in "
                     .. self.timeout_ms / 1000 .. " s")
      end
    end, true)
    T.resume(co)
  end

  --- Starts a run for reason unless one is going (then joins it). A run
  -- for "ttl" starts after a random delay of up to the jitter; others at
  -- once (a function that does not wait has answered when run returns).
  function Runner:run(reason)
    if self.closed or self.running then return end
    self.gen = self.gen + 1
    local gen = self.gen
    self.running = { gen = gen, reason = reason, started = now(),
                     waiters = {} }
    self.reason = reason
    self.stats.running = true
    if reason == "ttl" and self.jitter_ms > 0 then
      core.after(math.random(0, self.jitter_ms), function()
        self:_start(gen)
      end, true)
    else
      self:_start(gen)
    end
  end

  local function start_wait(target, self)
    if not self.running then return nil, "discovery ended" end
    local w = self.running.waiters
    w[#w + 1] = target
    return true
  end

  --- The pool's first list: runs the function and waits for it if it
  -- waits (see resilnet.tasks' await: in a task it yields, outside the
  -- loop it drives it, in a plain callback it raises). list, or nil, err
  -- when the function returned nil, err or ran past the deadline; raises
  -- (blaming the pool's creator) when it raised or returned a bad list:
  -- those are mistakes in the program, not in the network.
  function Runner:first(name)
    self:run("create")
    if self.running then
      local co = coroutine.running()
      if not (co and tasks[co]) and core.running() then
        -- A plain callback cannot wait (await would raise): stop what the
        -- function attached before saying so.
        self:close()
        error(name .. ": the endpoints function waits, which a callback "
              .. "cannot; make the pool in a task (resilnet.spawn)", 3)
      end
      await(name, start_wait, self)
    end
    if self.current == nil then
      local err = tostring(self.stats.last_error)
      -- No pool will exist: whatever the function attached to it (a
      -- Sentinel's poll) stops now instead of working for nobody.
      self:close()
      if self.last_kind ~= "runtime" then
        error(name .. ": discovery failed: " .. err, 3)
      end
      return nil, err
    end
    return self.current
  end

  --- d:publish(list): a new list at once, outside a run (e.g. a Sentinel's
  -- switch seen by a poll). true, or nil, err (pool closed, bad list).
  function Runner:publish(list)
    if self.closed then return nil, "closed" end
    local err = bad_list(list)
    if err then
      error("discovery:publish: " .. err, 2)
    end
    local changed = self.current ~= nil and not same_list(self.current, list)
    self.current = copy(list)
    if changed then self.stats.changes = self.stats.changes + 1 end
    local ok, why = self.sink("apply", self.current)
    self.sink("event", { type = "discovery", ok = ok and true or false,
                         reason = "publish", duration = 0,
                         changed = changed, endpoints = copy(list),
                         error = not ok and why and tostring(why) or nil })
    return ok, why
  end

  --- d:emit(ev): delivers ev (a table with a `type`) on the pool; a
  -- "failover" event is counted in stats().discovery.failovers.
  function Runner:emit(ev)
    if self.closed then return end
    if ev.type == "failover" then
      self.stats.failovers = self.stats.failovers + 1
    end
    self.sink("event", ev)
  end

  --- d:is_open(): false once the pool closed or was collected (a
  -- background helper, such as a Sentinel poll, then stops).
  function Runner:is_open()
    return not self.closed and self.sink("alive") == true
  end

  local function start_weak_timer(target, ms)
    core.after(ms, target, true)
    return true
  end

  --- d:sleep(seconds): a sleep that never keeps resilnet.run() going by
  -- itself, for background helpers of this pool (a poll): when nothing
  -- else is left to do, run() returns and the helper waits for the next.
  function Runner:sleep(seconds)
    await("discovery:sleep", start_weak_timer, math.ceil(seconds * 1000))
  end

  --- d:on_close(f): f() runs once when the pool closes.
  function Runner:on_close(f)
    if type(f) ~= "function" then
      error("discovery:on_close: expected a function, got " .. type(f), 2)
    end
    if self.closed then return f() end
    self.closers[#self.closers + 1] = f
  end

  --- The pool closes: a run going on is abandoned (its answer ignored),
  -- waiters get nil, "closed", closers run.
  function Runner:close()
    if self.closed then return end
    self.closed = true
    local run = self.running
    self.running = nil
    self.stats.running = false
    if run then
      for i = 1, #run.waiters do wake(run.waiters[i], nil, "closed") end
    end
    local closers = self.closers
    self.closers = {}
    for i = 1, #closers do closers[i]() end
  end

  --- A copy of the counters, for pool:stats().discovery.
  function Runner:stats_copy()
    local s, out = self.stats, {}
    for k, v in pairs(s) do out[k] = v end
    out.endpoints = self.current and copy(self.current) or nil
    return out
  end

  return D
end
