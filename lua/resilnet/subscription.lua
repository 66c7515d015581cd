-- resilnet.subscription: pool:subscribe{...}, a subscription that outlives
-- its connection. Returns an installer: install(core, T, Pool).
--
-- One task (the runner) holds a connection of the pool, turns it into a
-- subscriber (core.hold_subscribe), subscribes to the current channels and
-- patterns, and waits until the connection is lost; then it holds another
-- (the pool's reconnect backoff paces it) and subscribes again. What was
-- published while no connection was subscribed is lost: the first
-- confirmation after an outage tells the handler so, once ("gap"), with
-- the outage's start and end. Messages go through a bounded queue to a
-- second task (the drainer) that calls the handler in order, so a slow
-- handler never stops the loop from reading; when the queue is full the
-- newest message is dropped, counted, and the handler hears "overflow"
-- once per episode (until the queue has emptied again).
local coroutine, error, ipairs, math, pairs, setmetatable, tostring, type
      = coroutine, error, ipairs, math, pairs, setmetatable, tostring, type

local DEFAULT_MAX_QUEUE = 1000
-- After a failed attempt to hold a connection that did not wait (the pool
-- overloaded, say): the pause before the next, so nothing spins.
local RETRY_PAUSE = 0.05
-- A connection lost before any confirmation came (the server refused the
-- SUBSCRIBE: an ACL, say, whose error reply closes the connection) is
-- followed by a pause doubling up to this, so a refusal does not turn
-- into a reconnect loop.
local MAX_REFUSED_PAUSE = 1

return function(core, T, Pool)
  local await = T.await
  local pool_hold, hold_subscribe, hold_write, hold_release = core.pool_hold,
        core.hold_subscribe, core.hold_write, core.hold_release

  local Sub = {}
  Sub.__index = Sub

  local function names(fname, what, list)
    local set = {}
    if list == nil then return set end
    if type(list) ~= "table" then
      error(fname .. ": option '" .. what .. "' must be an array of "
            .. "strings, got " .. type(list), 3)
    end
    for i, v in ipairs(list) do
      if type(v) ~= "string" then
        error(fname .. ": option '" .. what .. "' [" .. i .. "] must be a "
              .. "string, got " .. type(v), 3)
      end
      set[v] = true
    end
    return set
  end

  local function wake(sub, field)
    local co = sub[field]
    if co then
      sub[field] = nil
      core.after(0, co) -- from the loop: never inside the core's callback
    end
  end

  -- The handler's queue: entries {kind, a, b, c}. Control entries (gap,
  -- overflow) are never dropped.
  local function enqueue(sub, e, control)
    local q = sub._queue
    if not control and q.last - q.first + 1 >= sub._max_queue then
      sub._stats.dropped = sub._stats.dropped + 1
      if not sub._overflowing then
        sub._overflowing = true
        sub._stats.overflows = sub._stats.overflows + 1
        enqueue(sub, { "overflow", { max_queue = sub._max_queue } }, true)
      end
      return
    end
    q.last = q.last + 1
    q[q.last] = e
    wake(sub, "_drain_waiting")
  end

  -- The connection is gone (or none came): messages may be lost from now
  -- on, unless it never was subscribed (nothing published before was
  -- its to get).
  local function mark_gap(sub)
    if sub._gap_start == nil and sub._stats.connections > 0
       and not sub._closed then
      sub._gap_start = T.now()
    end
  end

  local function subscribe_frames(sub)
    local frames, ch, pat = {}, { "SUBSCRIBE" }, { "PSUBSCRIBE" }
    for c in pairs(sub._channels) do ch[#ch + 1] = c end
    for p in pairs(sub._patterns) do pat[#pat + 1] = p end
    if #ch > 1 then frames[#frames + 1] = ch end
    if #pat > 1 then frames[#frames + 1] = pat end
    return frames
  end

  -- A frame from the subscriber connection, or (nil, err) once it is lost.
  local function on_push(sub, v, err)
    if v == nil then
      sub._lost = err
      mark_gap(sub)
      wake(sub, "_runner_waiting")
      return
    end
    if type(v) ~= "table" then return end
    local kind = tostring(v[1]):lower()
    if kind == "message" or kind == "smessage" then
      if sub._channels[v[2]] then
        sub._stats.received = sub._stats.received + 1
        enqueue(sub, { "message", v[2], v[3] })
      end
    elseif kind == "pmessage" then
      if sub._patterns[v[2]] then
        sub._stats.received = sub._stats.received + 1
        enqueue(sub, { "pmessage", v[3], v[4], v[2] })
      end
    elseif kind == "subscribe" or kind == "psubscribe" then
      sub._confirmed = true
    end
    if (kind == "subscribe" or kind == "psubscribe")
       and sub._gap_start ~= nil then
      -- Subscribed again: whatever was published since the loss is gone.
      local gap = { start = sub._gap_start, finish = T.now() }
      sub._gap_start = nil
      sub._stats.gaps = sub._stats.gaps + 1
      enqueue(sub, { "gap", gap }, true)
    end
  end

  local function start_hold(target, h)
    return pool_hold(h, target, 0)
  end

  local function runner(sub)
    local pool = sub._pool
    local refused_pause = RETRY_PAUSE
    while not sub._closed and not pool._closing do
      local h = await("pool:subscribe", start_hold, pool._h)
      if h and (sub._closed or pool._closing) then
        hold_release(h, true)
      elseif h then
        sub._lost, sub._confirmed = nil, false
        local ok = hold_subscribe(h, function(v, err) on_push(sub, v, err) end)
        local frames = subscribe_frames(sub)
        if ok and #frames > 0 then ok = hold_write(h, frames) end
        if ok then
          sub._h = h
          sub._stats.connections = sub._stats.connections + 1
          while sub._lost == nil and not sub._closed do
            sub._runner_waiting = coroutine.running()
            coroutine.yield()
          end
          sub._h = nil
          if sub._confirmed or #frames == 0 then
            refused_pause = RETRY_PAUSE
          elseif not sub._closed then
            T.sleep(refused_pause)
            refused_pause = math.min(refused_pause * 2, MAX_REFUSED_PAUSE)
          end
        else
          mark_gap(sub)
        end
        hold_release(h, true)
      else
        mark_gap(sub)
        T.sleep(RETRY_PAUSE)
      end
    end
    sub._runner_done = true
    wake(sub, "_close_waiting")
  end

  local function drainer(sub)
    local q = sub._queue
    while true do
      if q.first > q.last then
        sub._overflowing = false -- an overflow episode ends once drained
        if sub._closed then break end
        sub._drain_waiting = coroutine.running()
        coroutine.yield()
      else
        local e = q[q.first]
        q[q.first] = nil
        q.first = q.first + 1
        if e[1] ~= "overflow" and e[1] ~= "gap" then
          sub._stats.delivered = sub._stats.delivered + 1
        end
        if not sub._closed then
          sub._handler(e[1], e[2], e[3], e[4])
        end
      end
    end
  end

  --- pool:subscribe{ channels = {...}, patterns = {...}, handler = fn,
  -- max_queue = 1000 } -> subscription. fn(kind, ...) is called from a
  -- task of its own, in order: ("message", channel, payload),
  -- ("pmessage", channel, payload, pattern), ("gap", {start, finish})
  -- once per outage after it subscribed again, ("overflow", {max_queue})
  -- once per episode of a full queue. resp pools only.
  function Pool:subscribe(opts)
    local fname = "pool:subscribe"
    if self.options.protocol ~= "resp" then
      error(fname .. ": needs protocol 'resp', not '"
            .. tostring(self.options.protocol) .. "'", 2)
    end
    if type(opts) ~= "table" then
      error(fname .. ": expected a table of options, got " .. type(opts), 2)
    end
    for k in pairs(opts) do
      if k ~= "channels" and k ~= "patterns" and k ~= "handler"
         and k ~= "max_queue" then
        error(fname .. ": unknown option '" .. tostring(k) .. "'", 2)
      end
    end
    if type(opts.handler) ~= "function" then
      error(fname .. ": option 'handler' must be a function, got "
            .. type(opts.handler), 2)
    end
    local max_queue = opts.max_queue
    if max_queue == nil then max_queue = DEFAULT_MAX_QUEUE end
    if type(max_queue) ~= "number" or max_queue < 1
       or max_queue ~= math.floor(max_queue) then
      error(fname .. ": option 'max_queue' must be a positive integer, got "
            .. tostring(max_queue), 2)
    end
    local sub = setmetatable({
      _pool = self, _handler = opts.handler, _max_queue = max_queue,
      _channels = names(fname, "channels", opts.channels),
      _patterns = names(fname, "patterns", opts.patterns),
      _queue = { first = 1, last = 0 },
      _stats = { received = 0, delivered = 0, dropped = 0, overflows = 0,
                 gaps = 0, connections = 0 },
    }, Sub)
    T.spawn(runner, sub)
    T.spawn(drainer, sub)
    return sub
  end

  local function change(sub, fname, cmd, set, list, add)
    if sub._closed then
      error(fname .. ": the subscription is closed", 3)
    end
    local given = names(fname, "names", list)
    local frame = { cmd }
    for n in pairs(given) do
      set[n] = add or nil
      frame[#frame + 1] = n
    end
    -- Not connected now: the next connection subscribes to the sets.
    if sub._h and #frame > 1 then hold_write(sub._h, { frame }) end
    return true
  end

  --- sub:add(channels[, patterns]): subscribes to more.
  function Sub:add(channels, patterns)
    change(self, "subscription:add", "SUBSCRIBE", self._channels, channels,
           true)
    return change(self, "subscription:add", "PSUBSCRIBE", self._patterns,
                  patterns, true)
  end

  --- sub:remove(channels[, patterns]): unsubscribes; their messages still
  -- in flight are not delivered.
  function Sub:remove(channels, patterns)
    change(self, "subscription:remove", "UNSUBSCRIBE", self._channels,
           channels, false)
    return change(self, "subscription:remove", "PUNSUBSCRIBE",
                  self._patterns, patterns, false)
  end

  --- sub:stats() -> {received, delivered, dropped, overflows, gaps,
  -- connections}.
  function Sub:stats()
    local s = {}
    for k, v in pairs(self._stats) do s[k] = v end
    s.queued = self._queue.last - self._queue.first + 1
    return s
  end

  local function start_close_wait(target, sub)
    if sub._runner_done then return nil end
    sub._close_waiting = target
    return true
  end

  --- sub:close(): stops: its connection is closed (never reused), queued
  -- messages are not delivered. Waits (in a task, or outside the loop)
  -- until its task is done; from a plain callback it returns at once.
  function Sub:close()
    if not self._closed then
      self._closed = true
      if self._h then hold_release(self._h, true) end
      wake(self, "_runner_waiting")
      wake(self, "_drain_waiting")
    end
    if self._runner_done
       or (core.running() and not T.tasks[coroutine.running()]) then
      return true
    end
    await("subscription:close", start_close_wait, self)
    return true
  end
end
