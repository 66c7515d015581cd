-- resilnet.tasks: tasks, the dispatcher, waiting, and what every object
-- shares (event handlers, closing once and waking the waiters).
--
-- The C core never yields and never calls Lua on its own. Every call from
-- C into Lua arrives through `dispatch` (registered with the binding) as
-- dispatch(target, ...), where target is a task to resume or a function to
-- call. Errors from tasks and callbacks are caught there, the first one is
-- recorded with its traceback and the loop stops; resilnet.run() (or a
-- waiting function driving the loop) re-raises it.
--
-- Returns a constructor, not the module: each `require "resilnet"` builds
-- its own state around the `resilnet.core` it loaded (a reload of both, as
-- busted's insulation or a script does, gets a fresh dispatcher).
local coroutine, debug, math, error, select, setmetatable, tostring, type,
      xpcall = coroutine, debug, math, error, select, setmetatable, tostring,
      type, xpcall
local unpack = table.unpack or unpack
local pack = table.pack or function(...)
  return { n = select("#", ...), ... }
end

return function(core)
  local T = {}

  -- Whether the running coroutine could yield here (5.3+, LuaJIT: the
  -- library's; 5.1 and 5.2: the binding's, which walks the stack).
  local can_yield = coroutine.isyieldable or core.can_yield


  -- Every task we run: coroutine -> info. info.args holds the arguments of a
  -- task not started yet; info.done, if set, is called as
  -- done(info, ok, ...) when the task finishes (server handlers use it).
  -- Weak keys: a task nobody can resume any more is garbage.
  local tasks = setmetatable({}, { __mode = "k" })

  local function error_with_traceback(co, err)
    if type(err) == "string" or type(err) == "number" then
      return debug.traceback(co, tostring(err))
    end
    return err
  end

  local function finish(co, info, ok, ...)
    if coroutine.status(co) ~= "dead" then
      return -- the task is waiting; whatever it waits for resumes it
    end
    tasks[co] = nil
    if info and info.done then
      return info.done(info, ok, ...)
    end
    if not ok then
      core.fail(error_with_traceback(co, (...)))
    end
  end

  local function resume(co, ...)
    local info = tasks[co]
    local args = info and info.args
    if args then
      info.args = nil
      return finish(co, info, coroutine.resume(co, unpack(args, 1, args.n)))
    end
    return finish(co, info, coroutine.resume(co, ...))
  end

  local function traceback_handler(err)
    if type(err) == "string" or type(err) == "number" then
      return debug.traceback(tostring(err), 2)
    end
    return err
  end

  -- xpcall with arguments (5.2+ and LuaJIT); Lua 5.1 needs a closure.
  local xpcall_args
  if select(2, xpcall(function(x) return x end, traceback_handler, true)) then
    xpcall_args = function(f, ...)
      return xpcall(f, traceback_handler, ...)
    end
  else
    xpcall_args = function(f, ...)
      local args = pack(...)
      return xpcall(function() return f(unpack(args, 1, args.n)) end,
                    traceback_handler)
    end
  end

  local function dispatch(target, ...)
    if type(target) == "thread" then
      if coroutine.status(target) ~= "suspended" then
        core.fail("resilnet: internal error: a " .. coroutine.status(target)
                  .. " task was resumed")
        return
      end
      return resume(target, ...)
    end
    local ok, err = xpcall_args(target, ...)
    if not ok then
      core.fail(err)
    end
  end

  -- A task the binding resumed itself (the common case: a suspended task
  -- getting its reply) that then ended or raised.
  local function finish_task(co, ok, ...)
    return finish(co, tasks[co], ok, ...)
  end

  core.set_dispatcher(dispatch, traceback_handler, finish_task, tasks)

  local function raise_recorded()
    local err = core.take_error()
    if err ~= nil then
      error(err, 0)
    end
  end

  local function current_task()
    local co = coroutine.running()
    if co ~= nil and tasks[co] ~= nil then
      return co
    end
    return nil
  end

  -- On a host's loop, the coroutine we are in (one a luv callback or a
  -- Neovim plugin made) becomes a task for as long as it waits: it yields
  -- to whoever resumed it, and the reply resumes it from the loop. nil in
  -- the main thread, or where yielding is impossible. yieldable: what a
  -- caller in C (pool:call) knows of that, since coroutine.isyieldable()
  -- called from it would see its own C call.
  local function adoptable(yieldable)
    local co, main = coroutine.running()
    if yieldable == nil then
      yieldable = can_yield()
    end
    if co == nil or main or not yieldable then
      return nil
    end
    return co
  end

  local function cannot_suspend(name)
    return "resilnet: " .. name .. " cannot wait here: a C function "
           .. "(table.sort, string.gsub, a metamethod called from C; pcall "
           .. "on Lua 5.1) stands between the coroutine and the call, and "
           .. "it cannot be suspended across it"
  end

  local function adopt(yieldable)
    local co = adoptable(yieldable)
    if co then tasks[co] = {} end
    return co
  end

  -- Runs the loop until is_done(); the waiter that sets it also stops the
  -- loop (uv_stop makes the turn's poll non-blocking, which UV_RUN_ONCE
  -- alone would not: a timer that fired at the start of the turn does not
  -- stop it from blocking for I/O). Re-raises recorded errors; raises if the
  -- loop runs out of work first (never spins).
  local function drive(name, is_done)
    while not is_done() do
      local alive = core.run("default")
      raise_recorded()
      if not alive and not is_done() then
        error("resilnet: " .. name .. " cannot complete: the loop has "
              .. "nothing left to run", 3)
      end
    end
  end

  -- The one way to wait. start(target, ...) hands target to the binding and
  -- returns true, or returns nil, err when it failed at once (then target
  -- is never dispatched). Returns what target is dispatched with.
  --  * in a task: yields until then;
  --  * outside any task and outside the loop: runs the loop until then;
  --  * inside a plain callback: raises (a callback cannot be suspended).
  local function await(name, start, ...)
    local co = current_task()
    if co and not can_yield() then
      -- Nothing is started: a call out for a task that could not suspend
      -- would resume it from whatever it waited for next, with this reply.
      error(cannot_suspend(name), 3)
    end
    if not co and core.loop() ~= "own" then
      co = adopt()
      if not co then
        local running, main = coroutine.running()
        if running ~= nil and not main then
          error(cannot_suspend(name), 3)
        end
        error("resilnet: cannot wait outside a coroutine on " .. core.loop()
              .. "'s loop, which its host runs; call " .. name
              .. " from a coroutine or a task (resilnet.spawn)", 3)
      end
    end
    if co then
      local ok, err = start(co, ...)
      if not ok then
        return nil, err
      end
      return coroutine.yield()
    end
    if core.running() then
      error("resilnet: cannot wait inside a callback; use resilnet.spawn ("
            .. name .. ")", 3)
    end
    local done, results = false, nil
    local ok, err = start(function(...)
      done, results = true, pack(...)
      core.stop()
    end, ...)
    if not ok then
      return nil, err
    end
    drive(name, function() return done end)
    return unpack(results, 1, results.n)
  end

  --- Runs fn(...) as a task, started on the next turn of the loop.
  function T.spawn(fn, ...)
    if type(fn) ~= "function" then
      error("resilnet.spawn: expected a function, got " .. type(fn), 2)
    end
    local co = coroutine.create(fn)
    tasks[co] = { args = pack(...) }
    core.after(0, co)
    return co
  end

  --- Runs the loop until no work is left. Re-raises the first error of a task
  -- or callback (with its traceback).
  function T.run()
    if core.loop() ~= "own" then
      error("resilnet.run: the loop is " .. core.loop() .. "'s, which its "
            .. "host runs (luv: uv.run())", 2)
    end
    if core.running() then
      error("resilnet.run: cannot be called from inside a task or callback",
            2)
    end
    repeat
      local alive = core.run("default")
      raise_recorded()
    until not alive
  end

  --- Runs one turn of the loop, blocking at most timeout seconds (default
  -- 0: never blocks). For hosts that poll resilnet.pollfd() themselves.
  -- Re-raises the first error of a task or callback. Returns whether work
  -- is left (a referenced handle or request).
  function T.step(timeout)
    timeout = timeout or 0
    if type(timeout) ~= "number" or not (timeout >= 0) then
      error("resilnet.step: expected seconds >= 0, got " .. tostring(timeout),
            2)
    end
    if core.loop() ~= "own" then
      error("resilnet.step: the loop is " .. core.loop() .. "'s, which its "
            .. "host runs", 2)
    end
    if core.running() then
      error("resilnet.step: cannot be called from inside a task or callback",
            2)
    end
    local alive
    if timeout == 0 then
      alive = core.run("nowait")
    else
      alive = core.run("once", math.ceil(timeout * 1000))
    end
    raise_recorded()
    return alive
  end

  local function start_timer(target, ms)
    core.after(ms, target)
    return true
  end

  function T.sleep(seconds)
    if type(seconds) ~= "number" or not (seconds >= 0) then
      error("resilnet.sleep: expected seconds >= 0, got " .. tostring(seconds),
            2)
    end
    await("resilnet.sleep", start_timer, math.ceil(seconds * 1000))
  end

  --- Monotonic seconds (float), for measuring intervals.
  T.now = core.now

  ---------------------------------------------------------------------------
  -- Closing: many waiters, one core callback.

  local function wake_all(obj)
    obj._closed = true
    local waiters = obj._waiters
    obj._waiters = nil
    for i = 1, waiters and #waiters or 0 do
      dispatch(waiters[i])
    end
  end

  local function start_close_wait(target, obj)
    if obj._closed then
      return nil
    end
    local w = obj._waiters
    w[#w + 1] = target
    return true
  end

  -- The close of every object (pool, server, proxy): the first call runs
  -- start(on_closed), which starts the core's close with on_closed as its
  -- callback; every call then waits until on_closed ran (see await) and
  -- returns true. may_defer: from a plain callback, return true at once (the
  -- close goes on from the loop) instead of raising that it cannot wait.
  -- The caller must tail-call it: await's error blames the caller's caller.
  local function close_and_wait(name, obj, may_defer, start)
    if not obj._closing then
      obj._closing = true
      obj._waiters = {}
      start(function() wake_all(obj) end)
    end
    -- (On a host's loop, outside a coroutine nothing may wait, and the
    -- host keeps running the loop the close goes on in.)
    local host_outside = core.loop() ~= "own" and not adoptable()
    if may_defer and not current_task()
       and (core.running() or host_outside) then
      return true
    end
    if not obj._closed then
      await(name, start_close_wait, obj)
    end
    return true
  end

  ---------------------------------------------------------------------------
  -- Event handlers of pools and servers: obj._handlers[event] is a list.
  local function add_handler(obj, fname, known, event, fn)
    if not known[event] then
      error(fname .. ": unknown event '" .. tostring(event) .. "'", 3)
    end
    if type(fn) ~= "function" then
      error(fname .. ": expected a function, got " .. type(fn), 3)
    end
    local list = obj._handlers[event]
    if not list then
      list = {}
      obj._handlers[event] = list
    end
    list[#list + 1] = fn
  end

  local function deliver(obj, ev)
    local list = obj._handlers[ev.type]
    for i = 1, list and #list or 0 do
      list[i](ev)
    end
  end

  T.tasks, T.resume, T.await, T.adopt = tasks, resume, await, adopt
  T.add_handler, T.deliver, T.close_and_wait = add_handler, deliver,
    close_and_wait
  return T
end
