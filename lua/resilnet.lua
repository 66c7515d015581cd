-- resilnet: pooled, resilient TCP clients and servers on libuv.
--
-- The facade owns every suspension: the C core never yields and never calls
-- Lua on its own. Every call from C into Lua arrives through `dispatch`
-- (registered with the binding) as dispatch(target, ...), where target is
-- a task to resume or a function to call. Errors from tasks and callbacks
-- are caught there, the first one is recorded with its traceback and the
-- loop stops; resilnet.run() (or a waiting function driving the loop)
-- re-raises it.
local core = require "resilnet.core"

local coroutine, debug, math, error, pairs, select, setmetatable, tostring,
      type, xpcall = coroutine, debug, math, error, pairs, select,
      setmetatable, tostring, type, xpcall
local unpack = table.unpack or unpack
local pack = table.pack or function(...)
  return { n = select("#", ...), ... }
end

local resilnet = {}

resilnet._VERSION = "resilnet " .. core.version
-- Compares equal across reloads (a NULL light userdata, like cjson.null).
resilnet.null = core.null
resilnet.error_metatable = core.error_metatable

--- True if v is a resilnet error object.
function resilnet.is_error(v)
  return core.is_error(v)
end

---------------------------------------------------------------------------
-- Tasks and the dispatcher

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
function resilnet.spawn(fn, ...)
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
function resilnet.run()
  if core.running() then
    error("resilnet.run: cannot be called from inside a task or callback",
          2)
  end
  repeat
    local alive = core.run("default")
    raise_recorded()
  until not alive
end

local function start_timer(target, ms)
  core.after(ms, target)
  return true
end

function resilnet.sleep(seconds)
  if type(seconds) ~= "number" or not (seconds >= 0) then
    error("resilnet.sleep: expected seconds >= 0, got " .. tostring(seconds),
          2)
  end
  await("resilnet.sleep", start_timer, math.ceil(seconds * 1000))
end

--- Monotonic seconds (float), for measuring intervals.
resilnet.now = core.now

---------------------------------------------------------------------------
-- Options: one schema per function. Each entry names an option, its check
-- and its default; the schema is both what the code accepts and what the
-- documentation lists (resilnet._options, compared by a test).

local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v > -math.huge
    and v < math.huge
end

local types = {
  string = { "a string", function(v) return type(v) == "string" end },
  boolean = { "a boolean", function(v) return type(v) == "boolean" end },
  ["function"] = { "a function",
                   function(v) return type(v) == "function" end },
  seconds = { "a number >= 0",
              function(v) return type(v) == "number" and v >= 0 end },
  positive = { "a number > 0",
               function(v) return type(v) == "number" and v > 0 end },
  ratio = { "a number between 0 and 1",
            function(v) return type(v) == "number" and v >= 0 and v <= 1 end },
  multiplier = { "a number >= 1",
                 function(v) return type(v) == "number" and v >= 1 end },
  count = { "an integer >= 1",
            function(v) return is_integer(v) and v >= 1 end },
  attempts = { "an integer from 1 to 5",
               function(v) return is_integer(v) and v >= 1 and v <= 5 end },
  count0 = { "an integer >= 0",
             function(v) return is_integer(v) and v >= 0 end },
  protocol = { 'one of "resp", "line", "length", "rnp"', function(v)
    return v == "resp" or v == "line" or v == "length" or v == "rnp"
  end },
  length_bytes = { "1, 2, 4 or 8", function(v)
    return v == 1 or v == 2 or v == 4 or v == 8
  end },
  delimiter = { "a string of 1 to 16 bytes without NUL", function(v)
    return type(v) == "string" and #v >= 1 and #v <= 16
      and not v:find("\0", 1, true)
  end },
  endpoints = { "a non-empty array of strings or a function", function(v)
    if type(v) == "function" then return true end
    if type(v) ~= "table" or #v == 0 then return false end
    for k, e in pairs(v) do
      if type(e) ~= "string" or not is_integer(k) or k < 1 or k > #v then
        return false
      end
    end
    return true
  end },
  key = { "true or a string of 1 to 255 bytes", function(v)
    return v == true or (type(v) == "string" and #v >= 1 and #v <= 255)
  end },
}

-- A nested table option: `fields` is its own schema; `or_false` allows
-- false (switched off); `on` means it is on, with every default, when the
-- caller leaves it out (heartbeats) rather than off (hedging).
local function nested(fields, or_false, on)
  return { table = fields, or_false = or_false, on = on }
end

local heartbeat_fields = {
  { "interval", "positive", 1 },
  { "timeout", "positive", 3 },
  { "ping", "string" },  -- line/length: the request body to ping with
  { "probe", "seconds", 30 }, -- a dead connection kept as a probe; 0: none
}
local keepalive_fields = {
  { "idle", "seconds", 20 },
  { "interval", "positive", 5 },
  { "count", "count", 3 },
  { "user_timeout", "seconds", 20 },
}
local reconnect_fields = {
  { "initial", "positive", 0.1 },
  { "multiplier", "multiplier", 1.6 },
  { "jitter", "ratio", 0.2 },
  { "max", "positive", 30 },
}
local budget_fields = {
  { "tokens", "count", 10 },
  { "ratio", "ratio", 0.1 },
}
local retry_fields = {
  { "attempts", "attempts", 3 },
  { "initial", "seconds", 0.01 },
  { "max", "seconds", 1 },
  { "budget", nested(budget_fields, false, true) },
  -- classify(err, request) -> "retry" | "fail" | nil (see README)
  { "classify", "function" },
}
local eject_fields = {
  { "failures", "count", 5 },
  { "time", "positive", 10 },
  { "max_time", "positive", 300 },
  { "max_share", "ratio", 0.5 },
}
local hedge_fields = {
  { "delay", "positive", 0.05 },
  { "max", "attempts", 2 },  -- attempts in flight, the first included
}

local pool_schema = {
  { "endpoints", "endpoints", nil, required = true },
  { "protocol", "protocol", "resp" },
  { "size", "count", 8 },
  { "min_idle", "count0", 0 },
  { "max_pending", "count0", 1000 },
  { "connect_timeout", "positive", 2 },
  { "idle_timeout", "seconds", 60 },
  { "max_lifetime", "seconds", 0 },
  { "timeout", "positive", 5 },
  { "max_frame", "count", 16 * 1024 * 1024 },
  { "delimiter", "delimiter", "\n", protocol = "line" },
  { "length_bytes", "length_bytes", 4, protocol = "length" },
  { "write_high_water", "count", 1024 * 1024 },
  { "heartbeat", nested(heartbeat_fields, true, true) },
  { "keepalive", nested(keepalive_fields, true, true) },
  { "reconnect", nested(reconnect_fields, false, true) },
  { "retry", nested(retry_fields, true, true) },
  { "hedge", nested(hedge_fields, true) },
  { "eject", nested(eject_fields, true, true) },
  { "resolve_ttl", "seconds", 30 },
  { "attempt_timeout", "seconds", 0 },
  { "max_in_flight", "count0", 10000 },
}

-- A dedupe store: a table (or object) with claim, finish and release
-- methods (see README, "Dedupe stores").
types.dedupe_store = { "a table with claim, finish and release functions",
  function(v)
    local t = type(v)
    if t ~= "table" then return false end
    return type(v.claim) == "function" and type(v.finish) == "function"
      and type(v.release) == "function"
  end }

local server_schema = {
  { "listen", "string", nil, required = true },
  { "protocol", "protocol", "resp" },
  { "handler", "function", nil, required = true },
  { "max_concurrent", "count", 256 },
  { "queue", "count0", 64, protocol = "rnp" },  -- waiting past max_concurrent
  { "retry_after", "seconds", 0.1, protocol = "rnp" },  -- OVERLOADED pushback
  { "idle_timeout", "seconds", 120 },
  -- limits for untrusted clients (docs/operations.md, "Running an exposed
  -- server"); max_connections 0: 3/4 of the descriptor limit
  { "frame_timeout", "seconds", 10 },
  { "max_connections", "count0", 0 },
  { "input_budget", "count", 64 * 1024 * 1024 },
  { "output_budget", "count", 64 * 1024 * 1024 },
  { "max_elements", "count", 65536, protocol = "resp" },
  { "max_pipeline", "count", 128 },
  { "write_timeout", "seconds", 30 },
  { "backlog", "count", 511 },
  { "max_frame", "count", 1024 * 1024 },
  { "delimiter", "delimiter", "\n", protocol = "line" },
  { "length_bytes", "length_bytes", 4, protocol = "length" },
  { "dedupe", nested({ { "window", "positive", 300 },
                       { "capacity", "count", 100000 },
                       { "store", "dedupe_store" } }, true) },  -- rnp
}

local call_schema = {
  { "idempotent", "boolean", false },
  { "timeout", "positive" },  -- default: the pool's timeout
  { "key", "key" },
  { "attempts", "attempts" },  -- default: the pool's retry.attempts
  { "attempt_timeout", "positive" },  -- default: the pool's
  { "hedge", nested(hedge_fields, true) },
}

local pool_close_schema = {
  { "drain", "seconds", 0 },
  { "reset", "boolean", false },
}
-- goaway = true or a drain: a graceful close (rnp: GOAWAY), draining for
-- `drain` seconds (5 when only goaway is given); neither: close at once.
local server_close_schema = {
  { "goaway", "boolean", false },
  { "drain", "seconds" },
}

resilnet._options = {
  pool = pool_schema,
  server = server_schema,
  call = call_schema,
  pool_close = pool_close_schema,
  server_close = server_close_schema,
}

-- name -> entry, built once per schema.
local index_cache = setmetatable({}, { __mode = "k" })
local function index_of(schema)
  local idx = index_cache[schema]
  if not idx then
    idx = {}
    for _, e in pairs(schema) do idx[e[1]] = e end
    index_cache[schema] = idx
  end
  return idx
end

local function describe(kind)
  if type(kind) == "table" then
    return kind.or_false and "a table or false" or "a table"
  end
  return types[kind][1]
end

local function check_table(fname, prefix, schema, opts, level)
  local idx = index_of(schema)
  for k, v in pairs(opts) do
    local e = type(k) == "string" and idx[k]
    if not e then
      error(fname .. ": unknown option '" .. prefix .. tostring(k) .. "'",
            level)
    end
    local kind = e[2]
    local ok
    if type(kind) == "table" then
      ok = type(v) == "table" or (kind.or_false and v == false)
    else
      ok = types[kind][2](v)
    end
    if not ok then
      error(fname .. ": option '" .. prefix .. k .. "' must be "
            .. describe(kind) .. ", got " .. (type(v) == "string" and
            ("'" .. v .. "'") or type(v) == "number" and tostring(v)
            or type(v)), level)
    end
    if type(kind) == "table" and type(v) == "table" then
      check_table(fname, prefix .. k .. ".", kind.table, v, level + 1)
    end
  end
  for _, e in pairs(schema) do
    if e.required and opts[e[1]] == nil then
      error(fname .. ": option '" .. prefix .. e[1] .. "' is required",
            level)
    end
  end
end

-- A copy of opts (already checked) with every default of schema filled in,
-- nested tables included: the schema is the one place defaults live.
local function with_defaults(schema, opts)
  local out = {}
  for _, e in pairs(schema) do
    local v, kind = opts[e[1]], e[2]
    if type(kind) == "table" then
      if v == nil and kind.on then v = {} end
      if type(v) == "table" then v = with_defaults(kind.table, v) end
    elseif v == nil then
      v = e[3]
    end
    out[e[1]] = v
  end
  return out
end

-- Validates opts (a table or nil) against schema and returns a table with
-- every default filled in. Raises naming the option, blaming the caller of
-- the public function; depth: frames between that function and validate.
local function validate(fname, schema, opts, depth)
  local level = 3 + (depth or 0)
  if opts == nil then
    opts = {}
  elseif type(opts) ~= "table" then
    error(fname .. ": expected a table of options, got " .. type(opts),
          level)
  end
  check_table(fname, "", schema, opts, level + 1)
  for _, e in pairs(schema) do
    if e.protocol and opts[e[1]] ~= nil and opts.protocol ~= e.protocol then
      error(fname .. ": option '" .. e[1] .. "' applies only to protocol '"
            .. e.protocol .. "'", level)
    end
  end
  return with_defaults(schema, opts)
end

local function ms(seconds)
  return math.ceil(seconds * 1000)
end

---------------------------------------------------------------------------
-- Waiting on closes: many waiters, one core callback.

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

local function wait_closed(name, obj)
  if not obj._closed then
    await(name, start_close_wait, obj)
  end
  return true
end

---------------------------------------------------------------------------
-- Pools

local Pool = {}
Pool.__index = Pool

local events = { state = true, retry = true, overload = true, eject = true,
                 budget = true, resolve = true }

-- The current list from a discovery function, checked like the option.
-- list, if it is a non-empty array of strings; else raises "<what> must
-- be ...", blaming level.
local function endpoint_list(what, list, level)
  if type(list) ~= "table" or not types.endpoints[2](list) then
    error(what .. " must be a non-empty array of strings, got "
          .. type(list), level + 1)
  end
  return list
end

local function discover(fn, level)
  return endpoint_list("resilnet.pool: what the endpoints function returns",
                       fn(), level + 1)
end

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

--- resilnet.pool{endpoints = {...} | fn, ...} -> pool. See
-- resilnet._options.pool.
function resilnet.pool(opts)
  local o = validate("resilnet.pool", pool_schema, opts)
  local hb, ka, rc, rt, ej = o.heartbeat, o.keepalive, o.reconnect, o.retry,
                             o.eject
  local discovery = type(o.endpoints) == "function" and o.endpoints or nil
  local endpoints = discovery and discover(discovery, 3) or o.endpoints
  local h = core.pool_new {
    heartbeat_interval_ms = hb and ms(hb.interval) or 0,
    heartbeat_timeout_ms = hb and ms(hb.timeout) or 0,
    heartbeat_ping = hb and hb.ping or nil,
    heartbeat_probe_ms = hb and ms(hb.probe) or 0,
    keepalive_idle = ka and math.ceil(ka.idle) or 0,
    keepalive_interval = ka and math.ceil(ka.interval) or nil,
    keepalive_count = ka and ka.count or nil,
    user_timeout_ms = ka and ms(ka.user_timeout) or 0,
    reconnect_initial_ms = ms(rc.initial),
    reconnect_multiplier = rc.multiplier,
    reconnect_jitter = rc.jitter,
    reconnect_max_ms = ms(rc.max),
    idle_timeout_ms = ms(o.idle_timeout),
    max_lifetime_ms = ms(o.max_lifetime),
    min_idle = o.min_idle,
    retry_attempts = rt and rt.attempts or 1,
    retry_initial_ms = rt and ms(rt.initial) or nil,
    retry_max_ms = rt and ms(rt.max) or nil,
    retry_budget_tokens = rt and rt.budget.tokens or nil,
    retry_budget_ratio = rt and rt.budget.ratio or nil,
    classify = rt and rt.classify or nil,
    eject_failures = ej and ej.failures or 0,
    eject_time_ms = ej and ms(ej.time) or nil,
    eject_max_time_ms = ej and ms(ej.max_time) or nil,
    eject_max_share = ej and ej.max_share or nil,
    resolve_ttl_ms = ms(o.resolve_ttl),
    attempt_timeout_ms = ms(o.attempt_timeout),
    hedge_delay_ms = o.hedge and ms(o.hedge.delay) or 0,
    hedge_max = o.hedge and o.hedge.max or nil,
    max_in_flight = o.max_in_flight,
    endpoints = endpoints,
    protocol = o.protocol,
    length_bytes = o.length_bytes,
    delimiter = o.delimiter,
    max_frame = o.max_frame,
    size = o.size,
    max_pending = o.max_pending,
    connect_timeout_ms = ms(o.connect_timeout),
    timeout_ms = ms(o.timeout),
    write_high_water = o.write_high_water,
  }
  local self = setmetatable({ _h = h, _handlers = {}, options = o }, Pool)
  -- The binding holds the event target in the registry: it must not hold
  -- the pool itself, or an unreachable pool could never be collected.
  local weak = setmetatable({ self }, { __mode = "v" })
  core.pool_on(h, function(ev)
    local pool = weak[1]
    if not pool then
      return
    end
    if ev.type == "resolve" and discovery then
      -- Scripted discovery: the core asks (after a connect failure, and
      -- every resolve_ttl); the function answers with the current list.
      pool:set_endpoints(discover(discovery, 2))
    end
    deliver(pool, ev)
  end)
  return self
end

-- pool_send's option arguments from per-call options already checked:
-- timeout, idempotent, attempts, attempt_timeout, hedge_delay, hedge_max,
-- key.
local function send_options(opts)
  local timeout, attempt_timeout = opts.timeout, opts.attempt_timeout
  local hedge, hedge_delay, hedge_max = opts.hedge, nil, nil
  if hedge == false then
    hedge_delay = 0
  elseif hedge then
    hedge_delay, hedge_max = ms(hedge.delay or 0.05), hedge.max or 2
  end
  return timeout and ms(timeout) or 0, opts.idempotent == true, opts.attempts,
         attempt_timeout and ms(attempt_timeout) or nil, hedge_delay, hedge_max,
         opts.key
end

-- Per-call options, on the hot path: checked in place, no copy, and the
-- flat ones (idempotent, timeout, key, attempts, attempt_timeout) without
-- the schema walk. Anything else (hedge, or an option that is unknown or
-- wrong) goes through check_table, which raises naming it. Returns what
-- send_options does.
local next = next

local function call_options(fname, opts)
  if type(opts) ~= "table" then
    error(fname .. ": expected a table of options, got " .. type(opts), 3)
  end
  local timeout, idempotent, attempts, attempt_timeout, key
  local k, v = next(opts)
  while k ~= nil do
    if k == "idempotent" and (v == true or v == false) then
      idempotent = v
    elseif k == "attempts" and (v == 1 or v == 2 or v == 3 or v == 4
                                or v == 5) then
      attempts = v
    elseif k == "timeout" and type(v) == "number" and v > 0 then
      timeout = ms(v)
    elseif k == "attempt_timeout" and type(v) == "number" and v > 0 then
      attempt_timeout = ms(v)
    elseif k == "key" and (v == true or type(v) == "string" and #v >= 1
                           and #v <= 255) then
      key = v
    else
      check_table(fname, "", call_schema, opts, 4)
      return send_options(opts)
    end
    k, v = next(opts, k)
  end
  return timeout or 0, idempotent == true, attempts, attempt_timeout, nil,
         nil, key
end

local pool_send, pool_call, pool_callback = core.pool_send, core.pool_call,
                                            core.pool_callback
local running, yield = coroutine.running, coroutine.yield

local function start_send(target, h, request, timeout, idempotent, attempts,
                          attempt_timeout, hedge_delay, hedge_max, key)
  return pool_send(h, request, target, timeout, idempotent, attempts,
                   attempt_timeout, hedge_delay, hedge_max, key)
end

--- pool:call(request, opts) -> reply | nil, err. Waits (see await).
function Pool:call(request, opts)
  if opts == nil then
    -- Most calls: no options, from a task. What await does, inline:
    -- pool_call sends unless this is no task (false).
    local ok, err = pool_call(self._h, request)
    if ok then
      return yield()
    elseif ok == nil then
      return nil, err
    end
    return await("pool:call", start_send, self._h, request)
  end
  local co = running()
  if co and tasks[co] then
    local ok, err = pool_send(self._h, request, co,
                              call_options("pool:call", opts))
    if ok then
      return yield()
    end
    return nil, err
  end
  return await("pool:call", start_send, self._h, request,
               call_options("pool:call", opts))
end

--- pool:send(request, opts, cb) -> true | nil, err. cb(reply, err) runs
-- once, from the loop, unless send itself returned nil, err.
function Pool:send(request, opts, cb)
  if cb == nil then
    -- pool:send(request, cb), the usual form: false if cb is no function
    local ok, err = pool_callback(self._h, request, opts)
    if ok ~= false then
      return ok, err
    end
  end
  if type(cb) ~= "function" then
    error("pool:send: expected a callback function, got " .. type(cb), 2)
  end
  if opts == nil then
    return pool_send(self._h, request, cb)
  end
  return pool_send(self._h, request, cb, call_options("pool:send", opts))
end

--- pool:on(event, fn): fn(ev) runs for every event of that type.
function Pool:on(event, fn)
  add_handler(self, "pool:on", events, event, fn) -- not a tail call: the
  return self                                     -- error level counts it
end

function Pool:stats()
  return core.pool_stats(self._h)
end

--- Forgets the reconnect backoff of every endpoint and connects again at
-- once if calls are waiting: for when the application knows a server is
-- back.
function Pool:reset_backoff()
  core.pool_reset_backoff(self._h)
end

--- pool:set_endpoints{...}: replaces the endpoint list. Endpoints in both
-- lists keep their connections; dropped ones finish their calls and close.
-- true, or nil, err once the pool is closed; raises on a bad list.
function Pool:set_endpoints(list)
  endpoint_list("pool:set_endpoints: the list", list, 2)
  return core.pool_set_endpoints(self._h, list)
end

--- pool:close{drain = seconds}: stops taking calls, lets calls in flight
-- finish for up to drain seconds, waits until every connection closed
-- (from a plain callback, only starts it).
-- pool:close{reset = true}: fails every call at once and resets (RST)
-- every connection; for connections known to be broken.
function Pool:close(opts)
  local o = validate("pool:close", pool_close_schema, opts)
  if not self._closing then
    self._closing = true
    self._waiters = {}
    core.pool_close(self._h, ms(o.drain), function() wake_all(self) end,
                    o.reset)
  elseif o.reset then
    core.pool_close(self._h, 0, nil, true)
  end
  -- A plain callback (an event handler, a send callback) cannot wait: the
  -- close it started goes on from the loop.
  if not current_task() and core.running() then
    return true
  end
  return wait_closed("pool:close", self)
end

---------------------------------------------------------------------------
-- Servers

local Server = {}
Server.__index = Server

local function error_value(err)
  if type(err) == "string" or resilnet.is_error(err) then
    return err
  end
  return tostring(err)
end

-- A handler task finished: answer its request exactly once.
local function finish_request(info, ok, reply, err)
  local req = info.req
  if not ok then
    return core.request_fail(req, error_value(reply))
  end
  if reply == nil and err ~= nil then
    return core.request_fail(req, error_value(err))
  end
  if core.is_error(reply) then
    return core.request_fail(req, reply)
  end
  if info.stringify then
    reply = reply == nil and "" or tostring(reply)
  end
  return core.request_reply(req, reply)
end

local server_events = { overload = true, deadline = true, goaway = true,
                        protocol = true, idle = true, store = true,
                        backlog = true, frame_timeout = true, budget = true,
                        max_connections = true, max_elements = true,
                        dedupe_full = true, write_timeout = true }

-- A Lua dedupe store, driven by the core's dedupe logic: each operation
-- runs the store's method in a task (it may wait, e.g. on a resp pool) and
-- reports back. A method that raises is a bug: recorded like any task
-- error (run() re-raises it) and the operation fails; one that returns
-- nil, err is a store failure (claims are refused as not executed).
local function store_runner(store)
  local function done(info, ok, a, b, c)
    core.dedupe_done(info.op, ok, a, b, c)
    if not ok then
      core.fail(a)
    end
  end
  return function(op, method, key, window, reply, failed)
    local co = coroutine.create(function()
      if method == "claim" then
        return store:claim(key, window)
      elseif method == "finish" then
        return store:finish(key, reply, failed, window)
      end
      return store:release(key)
    end)
    -- Not the coroutine itself in its entry: Lua 5.1's weak keys are not
    -- ephemerons, and an abandoned store task must stay collectable (its
    -- op's __gc then fails the operation, so the server can finish).
    tasks[co] = { done = done, op = op }
    return resume(co)
  end
end

--- resilnet.server{listen = "127.0.0.1:0", handler = fn, ...} -> server.
-- handler(request, ctx) runs as a task per request; what it returns is the
-- reply; an error (raised, an error object, or nil, err) becomes an error
-- reply for resp and rnp (APPLICATION) and closes the connection for
-- line/length. ctx.server, ctx.peer ("host:port" of the client, nil if it
-- is gone). rnp also: ctx.id (an integer, or its decimal text past what a
-- Lua number holds exactly), ctx.deadline (seconds left when the handler
-- started, or nil), ctx.key, ctx.idempotent.
function resilnet.server(opts)
  local o = validate("resilnet.server", server_schema, opts)
  local self = setmetatable({ options = o, _handler = o.handler,
                              _handlers = {} }, Server)
  local stringify = o.protocol ~= "resp"
  local rnp = o.protocol == "rnp"
  -- The binding holds on_request in the registry: it reaches the server
  -- only weakly, so a server nobody references is collected and closed.
  local weak = setmetatable({ self }, { __mode = "v" })
  local function on_request(value, req, peer, id, deadline, key, idempotent)
    local srv = weak[1]
    if not srv then
      return core.request_fail(req, "server closed")
    end
    local ctx
    if rnp then
      ctx = { server = srv, peer = peer, id = id, deadline = deadline,
              key = key, idempotent = idempotent }
    else
      ctx = { server = srv, peer = peer }
    end
    local co = coroutine.create(srv._handler)
    tasks[co] = { done = finish_request, req = req, stringify = stringify }
    return resume(co, value, ctx)
  end
  local dd = o.dedupe
  local h, err = core.server_new({
    listen = o.listen,
    protocol = o.protocol,
    length_bytes = o.length_bytes,
    delimiter = o.delimiter,
    max_frame = o.max_frame,
    backlog = o.backlog,
    max_concurrent = o.max_concurrent,
    frame_timeout_ms = ms(o.frame_timeout),
    max_connections = o.max_connections,
    input_budget = o.input_budget,
    output_budget = o.output_budget,
    max_elements = o.max_elements,
    max_pipeline = o.max_pipeline,
    write_timeout_ms = ms(o.write_timeout),
    queue = o.queue,
    retry_after_ms = o.retry_after and ms(o.retry_after),
    idle_timeout_ms = ms(o.idle_timeout),
    dedupe = dd and true or false,
    dedupe_window_ms = dd and ms(dd.window) or nil,
    dedupe_capacity = dd and dd.capacity or nil,
  }, on_request, dd and dd.store and store_runner(dd.store) or nil)
  if not h then
    return nil, err
  end
  self._h = h
  core.server_on(h, function(ev)
    local srv = weak[1]
    if srv then deliver(srv, ev) end
  end)
  return self
end

--- server:address() -> host, port (port 0 for unix sockets).
function Server:address()
  return core.server_address(self._h)
end

--- server:on(event, fn): fn(ev) for every event of that type: "overload"
-- (a request refused past max_concurrent and queue), "deadline" (refused:
-- its deadline passed before it started), "goaway", "protocol" (a
-- connection closed for a malformed frame), "idle", "store" (the dedupe
-- store failed), "dedupe_full" (a new key refused: the memory store is at
-- capacity with every key inside its window), and the limits for
-- untrusted clients: "backlog", "frame_timeout", "budget",
-- "max_connections", "max_elements", "write_timeout" (see
-- docs/operations.md). fn runs
-- as a plain callback: it cannot wait.
function Server:on(event, fn)
  add_handler(self, "server:on", server_events, event, fn)
  return self
end

--- server:stats() -> table of counters (requests, handled, overloaded,
-- expired, replayed, joined, busy, discarded, protocol_errors, the
-- limits' idle_timeouts, frame_timeouts, budget_refused,
-- connections_refused, elements_refused, backlogged, write_timeouts) and
-- gauges (open,
-- active, queued, buffered_in, buffered_out).
function Server:stats()
  return core.server_stats(self._h)
end

--- server:close{}: stops listening, closes connections, waits until done.
-- server:close{goaway = true, drain = s}: stops listening, announces
-- GOAWAY (rnp), lets accepted requests finish for up to s seconds (5 if
-- only goaway is given), then closes; waits until done.
function Server:close(opts)
  local o = validate("server:close", server_close_schema, opts)
  if not self._closing then
    self._closing = true
    self._waiters = {}
    local drain = o.drain or (o.goaway and 5 or nil)
    core.server_close(self._h, function() wake_all(self) end,
                      drain and ms(drain) or nil)
  end
  return wait_closed("server:close", self)
end

---------------------------------------------------------------------------
-- Fault injection (resilnet.proxy) and child processes (resilnet.process)
-- for test harnesses; docs/harness.md has the whole story.

local Proxy = {}
Proxy.__index = Proxy

local proxy_schema = {
  { "listen", "string", "127.0.0.1:0" },
  { "upstream", "string", nil, required = true },
  { "seed", "count0" },         -- default: one picked from the clock
  { "backlog", "count", 511 },
  { "on_event", "function" },   -- on_event(ev) for every event, as it comes
  { "log", "count0", 10000 },   -- events kept for px:events() (newest)
  -- The proxied protocol: px:rule needs it to find requests and replies.
  { "protocol", "protocol" },   -- default: none, bytes only
  { "max_frame", "count", 16 * 1024 * 1024 },
  { "delimiter", "delimiter", "\n", protocol = "line" },
  { "length_bytes", "length_bytes", 4, protocol = "length" },
}

-- Per kind: the options it takes, beyond kind, direction and toxicity.
local ms_type = { "a number of ms >= 0",
                  function(v) return type(v) == "number" and v >= 0 end }
local bytes_type = { "an integer >= 0",
                     function(v) return is_integer(v) and v >= 0 end }
local distribution_type = { '"uniform" or "normal"', function(v)
  return v == "uniform" or v == "normal"
end }
local direction_type = { '"up", "down" or "both"', function(v)
  return v == "up" or v == "down" or v == "both"
end }
local fault_opts = {
  ms = ms_type, jitter = ms_type, distribution = distribution_type,
  kbps = types.positive, bytes_per_second = types.positive,
  bytes = types.count, delay_ms = ms_type,
  after_bytes = bytes_type, after_ms = ms_type, rst = types.boolean,
  rate = types.ratio,
}
local fault_kinds = {
  latency = { "ms", "jitter", "distribution" },
  bandwidth = { "kbps", "bytes_per_second" },
  slice = { "bytes", "delay_ms" },
  close = { "after_bytes", "after_ms", "rst" },
  reset = { "after_bytes", "after_ms" },
  half_close = { "after_bytes" },
  blackhole = {}, stall = {},
  corrupt = { "rate" },
  truncate = { "after_bytes" },
  duplicate = { "rate" },
  refuse = {}, stop_accept = {},
  slow_accept = { "ms", "jitter", "distribution" },
  accept_close = { "rst" },
  accept_reset = {},
}

--- resilnet.proxy{upstream = "127.0.0.1:7000", listen = "127.0.0.1:0",
-- seed = 1} -> proxy, or nil, err when it cannot listen.
function resilnet.proxy(opts)
  local o = validate("resilnet.proxy", proxy_schema, opts)
  local seed = o.seed or math.floor((core.now() * 1e6) % 2147483647)
  local self = setmetatable({ options = o, _seed = seed, _log = {},
                              _faults = {} }, Proxy)
  local weak = setmetatable({ self }, { __mode = "v" })
  local h, err = core.proxy_new({ listen = o.listen, upstream = o.upstream,
                                  seed = seed, backlog = o.backlog,
                                  protocol = o.protocol,
                                  max_frame = o.max_frame,
                                  delimiter = o.delimiter,
                                  length_bytes = o.length_bytes },
                                function(ev)
    local px = weak[1]
    if not px then return end
    local log = px._log
    log[#log + 1] = ev
    if #log > 2 * px.options.log then
      -- Trim in one go, not per event.
      local keep, n = {}, #log
      for i = n - px.options.log + 1, n do keep[#keep + 1] = log[i] end
      px._log = keep
    end
    if px.options.on_event then px.options.on_event(ev) end
  end)
  if not h then
    return nil, err
  end
  self._h = h
  return self
end

-- Checks the spec of px:fault or px:rule: a table of a known kind with
-- only options of that kind (those in `common` go with every kind), each of
-- its type (type_of(name), as { description, check }). Errors name the
-- caller's caller. Returns kind, its option names.
local function check_proxy_spec(what, spec, kinds, common, type_of)
  if type(spec) ~= "table" then
    error(what .. ": expected a table, got " .. type(spec), 3)
  end
  local kind = spec.kind
  local allowed = kinds[kind]
  if not allowed then
    error(what .. ": unknown kind '" .. tostring(kind) .. "'", 3)
  end
  for k, v in pairs(spec) do
    if k ~= "kind" then
      local t = common[k]
      if not t then
        local ok = false
        for _, name in ipairs(allowed) do
          if name == k then ok = true end
        end
        if not ok then
          error(what .. ": option '" .. tostring(k) .. "' does not apply "
                .. "to kind '" .. kind .. "'", 3)
        end
        t = type_of(k)
      end
      if not t[2](v) then
        error(what .. ": option '" .. k .. "' must be " .. t[1], 3)
      end
    end
  end
  return kind, allowed
end

--- px:fault{kind = "latency", direction = "down", ms = 50, ...} -> fault.
-- Takes effect at once on live connections. See docs/harness.md.
function Proxy:fault(spec)
  local kind = check_proxy_spec("proxy:fault", spec, fault_kinds,
                                { direction = direction_type,
                                  toxicity = types.ratio },
                                function(k) return fault_opts[k] end)
  local c = { kind = kind, direction = spec.direction or "both",
              toxicity = spec.toxicity or 1, ms = spec.ms,
              jitter = spec.jitter,
              normal = spec.distribution == "normal" and 1 or 0,
              after_bytes = spec.after_bytes, after_ms = spec.after_ms,
              rst = spec.rst and 1 or 0, rate = spec.rate }
  if kind == "bandwidth" then
    local bps = spec.bytes_per_second or (spec.kbps and spec.kbps * 125)
    if not bps then
      error("proxy:fault: bandwidth needs kbps or bytes_per_second", 2)
    end
    c.bytes_per_second = math.max(1, math.floor(bps))
  elseif kind == "slice" then
    if not spec.bytes then
      error("proxy:fault: slice needs bytes", 2)
    end
    c.slice_bytes, c.slice_delay = spec.bytes, spec.delay_ms or 0
  elseif kind == "truncate" and not spec.after_bytes then
    error("proxy:fault: truncate needs after_bytes", 2)
  elseif kind == "reset" then
    c.kind, c.rst = "close", 1
  elseif kind == "accept_reset" then
    c.kind, c.rst = "accept_close", 1
  end
  if c.ms then c.ms = math.ceil(c.ms) end
  if c.jitter then c.jitter = math.ceil(c.jitter) end
  if c.after_ms then c.after_ms = math.ceil(c.after_ms) end
  local id = core.proxy_fault(self._h, c)
  local f = { id = id, kind = kind, direction = c.direction }
  self._faults[id] = f
  return f
end

-- Per-request rules: per kind, the options it takes; the first is
-- required.
local rule_kinds = {
  fail_request = { "nth", "action" },
  fail_first = { "n", "action" },
  drop_reply = { "every" },
}
local action_type = { '"rst", "close" or "drop"', function(v)
  return v == "rst" or v == "close" or v == "drop"
end }

--- px:rule{kind = "fail_request", nth = 3, action = "rst"} -> rule.
-- Needs the proxy's protocol; counts requests (replies) across its
-- connections from now on. See docs/harness.md.
function Proxy:rule(spec)
  local kind, allowed = check_proxy_spec(
    "proxy:rule", spec, rule_kinds, {},
    function(k) return k == "action" and action_type or types.count end)
  if not self.options.protocol then
    error("proxy:rule: the proxy has no protocol to find requests with "
          .. "(resilnet.proxy{protocol = ...})", 2)
  end
  local n = spec[allowed[1]]
  if n == nil then
    error("proxy:rule: " .. kind .. " needs " .. allowed[1], 2)
  end
  local id = core.proxy_rule(self._h, { kind = kind, n = n,
                                        action = spec.action or "rst" })
  local r = { id = id, kind = kind }
  self._faults[id] = r
  return r
end

--- px:remove(f) -> true if it was active (a fault or a rule).
function Proxy:remove(f)
  local id = type(f) == "table" and f.id or f
  if type(id) ~= "number" then
    error("proxy:remove: expected a fault, got " .. type(f), 2)
  end
  self._faults[id] = nil
  return core.proxy_remove(self._h, id)
end

--- px:clear(): lifts every fault and rule.
function Proxy:clear()
  self._faults = {}
  core.proxy_clear(self._h)
end

--- px:reset_all(): RST on every live connection, both sides.
function Proxy:reset_all()
  core.proxy_reset_all(self._h)
end

--- px:address() -> host, port.
function Proxy:address()
  return core.proxy_address(self._h)
end

--- px:endpoint() -> "host:port", for a pool's endpoints.
function Proxy:endpoint()
  local host, port = core.proxy_address(self._h)
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  return host .. ":" .. port
end

function Proxy:seed()
  return self._seed
end

function Proxy:connections()
  return core.proxy_connections(self._h)
end

--- px:events() -> the newest events (up to options.log), oldest first:
-- { type, conn, fault, direction, bytes, error, time }.
function Proxy:events()
  local out = {}
  for i = 1, #self._log do out[i] = self._log[i] end
  return out
end

--- px:close(): stops listening, closes every connection, waits.
function Proxy:close()
  if not self._closing then
    self._closing = true
    self._waiters = {}
    core.proxy_close(self._h, function() wake_all(self) end)
  end
  return wait_closed("proxy:close", self)
end

-- Processes -----------------------------------------------------------------

local Process = {}
Process.__index = Process

local stdio_type = { "a function, a path or false", function(v)
  return type(v) == "function" or type(v) == "string" or v == false
end }
local process_fields = { env = "table", cwd = "string", stdout = stdio_type,
                         stderr = stdio_type }

--- resilnet.process{"prog", "arg", ..., env = {NAME = "v"}, cwd = "/x",
-- stdout = fn(chunk) | "path" | false, stderr = ...} -> process, or nil,
-- err when it cannot start. env adds to (false: removes from) the
-- parent's environment; stdout/stderr left out are inherited.
function resilnet.process(opts)
  if type(opts) ~= "table" then
    error("resilnet.process: expected a table, got " .. type(opts), 2)
  end
  local args = {}
  for k, v in pairs(opts) do
    if is_integer(k) then
      if type(v) ~= "string" and type(v) ~= "number" then
        error("resilnet.process: argument " .. k .. " must be a string", 2)
      end
    else
      local want = process_fields[k]
      if not want then
        error("resilnet.process: unknown option '" .. tostring(k) .. "'", 2)
      end
      if type(want) == "string" and type(v) ~= want or
         type(want) == "table" and not want[2](v) then
        error("resilnet.process: option '" .. k .. "' must be "
              .. (type(want) == "table" and want[1] or "a " .. want), 2)
      end
    end
  end
  for i = 1, #opts do args[i] = tostring(opts[i]) end
  if #args == 0 then
    error("resilnet.process: no program given", 2)
  end
  local self = setmetatable({ _spec = { args = args, env = opts.env,
                                        cwd = opts.cwd, stdout = opts.stdout,
                                        stderr = opts.stderr } }, Process)
  local ok, err = self:_spawn()
  if not ok then
    return nil, err
  end
  return self
end

function Process:_spawn()
  -- The exit callback lives in the registry: it must reach the process
  -- only weakly, so a process nobody holds is collected (and killed).
  local weak = setmetatable({ self }, { __mode = "v" })
  local gen = (self._gen or 0) + 1
  self._gen, self._code, self._signal, self._exited = gen, nil, nil, false
  local h, err = core.process_new(self._spec, function(code, signal)
    local p = weak[1]
    if p and p._gen == gen then
      p._code, p._signal, p._exited = code, signal, true
    end
  end)
  if not h then
    return nil, err
  end
  self._h = h
  return true
end

function Process:pid()
  return core.process_pid(self._h)
end

function Process:running()
  return not self._exited
end

--- p:kill(sig) -> true | nil, err. sig: "TERM" (default), "KILL",
-- "STOP", "CONT", "SIGHUP", ... or a number; sent to the child's group.
function Process:kill(sig)
  if self._exited then
    return nil, setmetatable({ code = "ESRCH",
                               message = "the process has exited" },
                             core.error_metatable)
  end
  return core.process_kill(self._h, sig or "TERM")
end

local function start_wait(target, h, timeout_ms)
  return core.process_wait(h, timeout_ms, target)
end

--- p:wait(timeout) -> code, signal | nil, err (ETIMEDOUT). code is the
-- exit status, or 128 + the signal number when a signal ended it (signal:
-- its name, "KILL"). Waits like every waiting function (see README).
function Process:wait(timeout)
  if timeout ~= nil and not (type(timeout) == "number" and timeout >= 0) then
    error("process:wait: expected seconds >= 0, got " .. tostring(timeout), 2)
  end
  if self._exited then
    return self._code, self._signal
  end
  return await("process:wait", start_wait, self._h,
               timeout and ms(timeout) or -1)
end

--- p:restart{signal = "KILL", timeout = nil} -> true | nil, err: ends the
-- child if it runs (signal, then waits up to timeout), starts it again
-- with the same arguments.
function Process:restart(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("process:restart: expected a table of options", 2)
  end
  if not self._exited then
    self:kill(opts.signal or "KILL")
    local code, err = self:wait(opts.timeout)
    if code == nil then
      return nil, err
    end
  end
  core.process_close(self._h)
  return self:_spawn()
end

--- p:close(): kills the child's group (SIGKILL) unless it exited, and
-- waits for it. Also done when the process is collected.
function Process:close()
  core.process_close(self._h)
  if not self._exited then
    self:wait()
  end
  return true
end

--- resilnet.check: the history checker for fault-injection tests
-- (lua/resilnet/check.lua; pure Lua).
resilnet.check = require "resilnet.check"

return resilnet
