-- resilnet.subscription: pool:subscribe{...}, a subscription that outlives
-- its connection. Returns an installer: install(core, T, Pool).
--
-- One task (the runner) holds a connection of the pool, turns it into a
-- subscriber (core.hold_subscribe), subscribes to the current channels and
-- patterns, and waits until the connection is lost; then it holds another
-- (the pool's reconnect backoff paces it) and subscribes again. What was
-- published while no connection was subscribed is lost: the first
-- confirmation after an outage tells the handler so, once ("gap"), with
-- the outage's start and end. A SUBSCRIBE the server refuses (an ACL's
-- -NOPERM) reaches the handler as "error" and is sent again on the same
-- connection after a pause that doubles up to MAX_REFUSED_PAUSE
-- (subscribing to what is subscribed already changes nothing).
--
-- Messages go through a queue to a second task (the drainer) that calls
-- the handler in order. Back-pressure: when the queue holds max_queue
-- entries the connection stops being read (core.hold_pause: frames read
-- already wait too) until the handler has brought it down to half; the
-- server's and the kernel's buffers hold the rest, and nothing is dropped
-- here. A server may close a subscriber that stays behind (Redis's
-- client-output-buffer-limit pubsub): that is a lost connection like any
-- other, and a "gap".
local coroutine, error, ipairs, math, pairs, setmetatable, tostring, type
      = coroutine, error, ipairs, math, pairs, setmetatable, tostring, type

local DEFAULT_MAX_QUEUE = 1000
-- After a failed attempt to hold a connection that did not wait (the pool
-- overloaded, say): the pause before the next, so nothing spins.
local RETRY_PAUSE = 0.05
-- After a refused SUBSCRIBE, or a connection lost before any confirmation
-- came (a server that closes subscribers at once): a pause doubling up to
-- this before the next try, so a refusal never turns into a loop.
local MAX_REFUSED_PAUSE = 1

return function(core, T, Pool)
  local await = T.await
  local pool_hold, hold_subscribe, hold_write, hold_release, hold_pause,
        hold_resume = core.pool_hold, core.hold_subscribe, core.hold_write,
        core.hold_release, core.hold_pause, core.hold_resume

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

  -- The handler's queue: entries {kind, a, b, c}, at most max_queue:
  -- frames come only while the connection is read, and the entry that
  -- fills the queue stops that (pause); the drainer starts it again at
  -- half (resume).
  local function pause(sub)
    if sub._paused then return end
    sub._paused, sub._paused_at = true, T.now()
    sub._stats.pauses = sub._stats.pauses + 1
    sub._overflow = true -- told to the handler as soon as it is free
    if sub._h then hold_pause(sub._h) end
    wake(sub, "_drain_waiting")
  end

  local function resume(sub)
    if not sub._paused then return end
    sub._paused = false
    sub._stats.paused_time = sub._stats.paused_time
                             + (T.now() - sub._paused_at)
    if sub._h then hold_resume(sub._h) end
  end

  local function enqueue(sub, e)
    local q = sub._queue
    q.last = q.last + 1
    q[q.last] = e
    local n = q.last - q.first + 1
    if n > sub._stats.queued_max then sub._stats.queued_max = n end
    if n >= sub._max_queue then pause(sub) end
    wake(sub, "_drain_waiting")
  end

  -- The connection is gone (or none came): messages may be lost from now
  -- on, unless it never was subscribed (nothing published before was
  -- its to get).
  local function mark_gap(sub)
    if sub._gap_start == nil and sub._ever_confirmed and not sub._closed then
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

  -- A frame from the subscriber connection; (nil, err, false) for a
  -- refused command; (nil, err, true) once the connection is lost.
  local function on_push(sub, v, err, lost)
    if v == nil and lost then
      sub._lost = err
      mark_gap(sub)
      wake(sub, "_runner_waiting")
      return
    end
    if v == nil then
      sub._stats.refused = sub._stats.refused + 1
      sub._refused = true
      enqueue(sub, { "error", err })
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
      sub._confirmed, sub._ever_confirmed = true, true
      if sub._gap_start ~= nil then
        -- Subscribed again: whatever was published since the loss is
        -- gone.
        local gap = { start = sub._gap_start, finish = T.now() }
        sub._gap_start = nil
        sub._stats.gaps = sub._stats.gaps + 1
        enqueue(sub, { "gap", gap })
      end
    end
  end

  local function start_hold(target, h)
    return pool_hold(h, target, 0)
  end

  -- Waits until the connection h is lost or the subscription closed;
  -- a refused command is written again (all of the current sets) after
  -- the pause. Returns the pause for the next refusal.
  local function serve(sub, h, pause_s)
    while sub._lost == nil and not sub._closed do
      if sub._refused then
        sub._refused = false
        T.sleep(pause_s)
        pause_s = math.min(pause_s * 2, MAX_REFUSED_PAUSE)
        if sub._lost == nil and not sub._closed then
          local frames = subscribe_frames(sub)
          if #frames > 0 then hold_write(h, frames) end
        end
      else
        sub._runner_waiting = coroutine.running()
        coroutine.yield()
      end
    end
    return pause_s
  end

  local function runner(sub)
    local pool = sub._pool
    local refused_pause = RETRY_PAUSE
    while not sub._closed and not pool._closing do
      local h = await("pool:subscribe", start_hold, pool._h)
      if h and (sub._closed or pool._closing) then
        hold_release(h, true)
      elseif h then
        sub._lost, sub._confirmed, sub._refused = nil, false, false
        local ok, err = hold_subscribe(h, function(v, e, lost)
          on_push(sub, v, e, lost)
        end)
        -- Still behind: this connection waits for the handler too.
        if ok and sub._paused then ok, err = hold_pause(h) end
        local frames = subscribe_frames(sub)
        if ok and #frames > 0 then ok, err = hold_write(h, frames) end
        if ok then
          sub._h = h
          sub._stats.connections = sub._stats.connections + 1
          refused_pause = serve(sub, h, refused_pause)
          sub._h = nil
          if sub._confirmed or #frames == 0 then
            refused_pause = RETRY_PAUSE
          elseif not sub._closed then
            T.sleep(refused_pause)
            refused_pause = math.min(refused_pause * 2, MAX_REFUSED_PAUSE)
          end
        else
          -- The connection took no SUBSCRIBE (a frame past max_frame, the
          -- connection gone meanwhile): told, and paced as a refusal, so
          -- that a cause that stays does not become a reconnect storm.
          mark_gap(sub)
          sub._stats.refused = sub._stats.refused + 1
          enqueue(sub, { "error", err })
          hold_release(h, true)
          h = nil
          T.sleep(refused_pause)
          refused_pause = math.min(refused_pause * 2, MAX_REFUSED_PAUSE)
        end
        if h then hold_release(h, true) end
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
    local low = math.floor(sub._max_queue / 2)
    while true do
      if sub._overflow then
        sub._overflow = false
        if not sub._closed then
          sub._handler("overflow", { max_queue = sub._max_queue })
        end
      elseif q.first > q.last then
        if sub._closed then break end
        sub._drain_waiting = coroutine.running()
        coroutine.yield()
      else
        local e = q[q.first]
        q[q.first] = nil
        q.first = q.first + 1
        if sub._paused and q.last - q.first + 1 <= low then resume(sub) end
        if e[1] == "message" or e[1] == "pmessage" then
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
  -- once per outage after it subscribed again, ("error", err) for a
  -- refused SUBSCRIBE (tried again, paced), ("overflow", {max_queue})
  -- once per pause of the connection's reading. resp pools only.
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
      _stats = { received = 0, delivered = 0, pauses = 0, paused_time = 0,
                 queued_max = 0, refused = 0, gaps = 0, connections = 0 },
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
    if sub._h and #frame > 1 then
      local ok, err = hold_write(sub._h, { frame })
      if not ok then return nil, err end -- the sets keep them: next time
    end
    return true
  end

  --- sub:add(channels[, patterns]): subscribes to more.
  function Sub:add(channels, patterns)
    local ok, err = change(self, "subscription:add", "SUBSCRIBE",
                          self._channels, channels, true)
    local pok, perr = change(self, "subscription:add", "PSUBSCRIBE",
                             self._patterns, patterns, true)
    if not ok or not pok then return nil, err or perr end
    return true
  end

  --- sub:remove(channels[, patterns]): unsubscribes; their messages still
  -- in flight are not delivered.
  function Sub:remove(channels, patterns)
    local ok, err = change(self, "subscription:remove", "UNSUBSCRIBE",
                          self._channels, channels, false)
    local pok, perr = change(self, "subscription:remove", "PUNSUBSCRIBE",
                             self._patterns, patterns, false)
    if not ok or not pok then return nil, err or perr end
    return true
  end

  --- sub:stats() -> {received, delivered, pauses, paused_time, paused,
  -- queued, queued_max, refused, gaps, connections}.
  function Sub:stats()
    local s = {}
    for k, v in pairs(self._stats) do s[k] = v end
    s.queued = self._queue.last - self._queue.first + 1
    s.paused = self._paused == true
    if self._paused then -- the episode going on counts too
      s.paused_time = s.paused_time + (T.now() - self._paused_at)
    end
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
      self._h = nil -- released: nothing pauses or resumes it any more
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
