-- resilnet.pool: pools of connections and their calls (Pool:call and
-- Pool:send are the hot path: everything they use is an upvalue).
-- Returns a constructor: build(core, tasks) -> { new = resilnet.pool }.
local opt = require "resilnet.options"

local coroutine, error, setmetatable, type = coroutine, error,
      setmetatable, type
local check_table, validate, ms, types = opt.check_table, opt.validate,
      opt.ms, opt.types
local block_arg = opt.block_arg
local pool_schema, call_schema, pool_close_schema = opt.schemas.pool,
      opt.schemas.call, opt.schemas.pool_close
local hedge_default = {}  -- a call's hedge: the pool's defaults
for _, e in ipairs(opt.hedge_fields) do hedge_default[e[1]] = e[3] end

return function(core, T)
  local P = {}
  local await = T.await
  local add_handler, deliver, close_and_wait = T.add_handler, T.deliver,
        T.close_and_wait

  local Pool = {}
  Pool.__index = Pool

  local events = { state = true, retry = true, overload = true, eject = true,
                   budget = true, resolve = true, wrong_role = true }
  -- An endpoints function's runs (lua/resilnet/discovery.lua), and the
  -- master changes resilnet.redis.sentinel reports through it.
  events.discovery, events.failover = true, true
  local D = require("resilnet.discovery")(core, T)

  -- The current list, checked like the option. list, if it is a
  -- non-empty array of strings; else raises "<what> must be ...", blaming
  -- level.
  local function endpoint_list(what, list, level)
    if type(list) ~= "table" or not types.endpoints[2](list) then
      error(what .. " must be a non-empty array of strings, got "
            .. type(list), level + 1)
    end
    return list
  end

  --- resilnet.pool{endpoints = {...} | fn, ...} -> pool. See
  -- resilnet._options.pool. With an endpoints function, its first answer
  -- is waited for (see resilnet.discovery): nil, err if it fails at run
  -- time (it returned nil, err or ran past discovery_timeout).
  function P.new(opts)
    local o = validate("resilnet.pool", pool_schema, opts)
    -- The core refuses it too, but only as "invalid options".
    if o.protocol == "rnp" and o.max_frame < 128 then
      error("resilnet.pool: option 'max_frame' must be at least 128 with "
            .. "protocol 'rnp' (the least a HELLO may announce)", 2)
    end
    local weak = setmetatable({}, { __mode = "v" })
    local runner, endpoints, made = nil, o.endpoints, false
    if type(endpoints) == "function" then
      -- Results reach the pool through weak: the runner (held by its
      -- running task, its timers, a Sentinel poll) never keeps an
      -- unreachable pool alive.
      runner = D.new(endpoints, o.discovery_timeout, o.discovery_jitter,
                     function(kind, x)
        local pool = weak[1]
        if kind == "alive" then return pool ~= nil or not made end
        if not pool then return true end
        if kind == "apply" then
          return core.pool_set_endpoints(pool._h, x)
        end
        deliver(pool, x)
      end)
      local err
      endpoints, err = runner:first("resilnet.pool")
      if not endpoints then
        return nil, "resilnet.pool: discovery failed: " .. tostring(err)
      end
    end
    -- The binding reads (and checks) the caller's own table: what is left
    -- out keeps the core's default. Not a tail call: it blames our caller.
    local h = core.pool_new(opts, endpoints)
    local self = setmetatable({ _h = h, _handlers = {}, options = o,
                                _discovery = runner }, Pool)
    weak[1], made = self, true
    -- The binding holds the event target in the registry: it must not hold
    -- the pool itself, or an unreachable pool could never be collected.
    core.pool_on(h, function(ev)
      local pool = weak[1]
      if not pool then
        return
      end
      if ev.type == "resolve" and runner then
        -- Scripted discovery: the core asks (after a connect failure, and
        -- every resolve_ttl); the runner answers now, or later from its
        -- task, through set_endpoints.
        runner:run(ev.reason)
      end
      deliver(pool, ev)
    end)
    return self
  end

  -- pool_send's option arguments from per-call options already checked:
  -- timeout, idempotent, attempts, attempt_timeout, hedge_delay, hedge_max,
  -- key, block (opt.block_arg's, given).
  local function send_options(opts, block)
    local timeout, attempt_timeout = opts.timeout, opts.attempt_timeout
    local hedge, hedge_delay, hedge_max = opts.hedge, nil, nil
    if hedge == false then
      hedge_delay = 0
    elseif hedge then
      hedge_delay, hedge_max = ms(hedge.delay or hedge_default.delay),
                               hedge.max or hedge_default.max
    end
    return timeout and ms(timeout) or 0, opts.idempotent == true,
           opts.attempts, attempt_timeout and ms(attempt_timeout) or nil,
           hedge_delay, hedge_max, opts.key, block
  end

  -- Per-call options, on the hot path: checked in place, no copy, and the
  -- flat ones (idempotent, timeout, key, attempts, attempt_timeout) without
  -- the schema walk. Anything else (hedge, or an option that is unknown or
  -- wrong) goes through check_table, which raises naming it. Returns what
  -- send_options does.
  local next = next

  -- Raises blaming the caller of the function that called it (one frame
  -- between them), or depth frames further out.
  local function call_options(fname, opts, depth)
    if type(opts) ~= "table" then
      error(fname .. ": expected a table of options, got " .. type(opts),
            3 + (depth or 0))
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
        check_table(fname, "", call_schema, opts, 4 + (depth or 0))
        return send_options(opts, block_arg(fname, opts, 4 + (depth or 0)))
      end
      k, v = next(opts, k)
    end
    return timeout or 0, idempotent == true, attempts, attempt_timeout, nil,
           nil, key
  end

  local pool_send, pool_callback = core.pool_send, core.pool_callback

  local function start_send(target, h, request, timeout, idempotent, attempts,
                            attempt_timeout, hedge_delay, hedge_max, key,
                            block)
    return pool_send(h, request, target, timeout, idempotent, attempts,
                     attempt_timeout, hedge_delay, hedge_max, key, block)
  end

  --- pool:call(request, opts) -> reply | nil, err. Waits (see await).
  -- In C (core.pool_call_method): from a task, or a coroutine a host's
  -- loop adopts, it starts the call and waits for the reply itself, with
  -- call_options checking opts; anywhere else (no task: it runs the loop,
  -- or raises) it calls this. A tail call: await's errors blame the
  -- caller of pool:call.
  local function call_elsewhere(self, request, opts)
    if opts == nil then
      return await("pool:call", start_send, self._h, request)
    end
    return await("pool:call", start_send, self._h, request,
                 call_options("pool:call", opts))
  end
  Pool.call = core.pool_call_method(call_elsewhere, call_options, T.adopt)

  --- pool:send(request, opts, cb) -> true | nil, err. cb(reply, err) runs
  -- once, from the loop, unless send itself returned nil, err. Reached
  -- only through the binding's pool:send (below), one more level between
  -- it and its caller, which its errors blame.
  function Pool:send(request, opts, cb)
    if cb == nil then
      -- pool:send(request, cb), the usual form: false if cb is no function
      local ok, err = pool_callback(self._h, request, opts)
      if ok ~= false then
        return ok, err
      end
      opts, cb = nil, opts -- the two-argument form's callback, not one
    end
    if type(cb) ~= "function" then
      error("pool:send: expected a callback function, got " .. type(cb), 3)
    end
    if opts == nil then
      return pool_send(self._h, request, cb)
    end
    return pool_send(self._h, request, cb,
                     call_options("pool:send", opts, 1))
  end
  -- pool:send(request, cb), the usual form, is sent by the binding itself
  -- (no Lua frame of ours on a callback's every next call); every other
  -- form still comes to the function above.
  Pool.send = core.pool_send_method(Pool.send)

  -- Batches ----------------------------------------------------------------

  local pool_batch, new_error, is_error = core.pool_batch, core.error,
        core.is_error
  local batch_wait = core.pool_batch_wait_new()

  -- pool_batch's option arguments: a call's, without hedge and key (a
  -- batch is never hedged; rnp keys would have to be per request).
  local function batch_options(fname, opts)
    if type(opts) == "table" and (opts.hedge ~= nil or opts.key ~= nil) then
      error(fname .. ": option '" .. (opts.hedge ~= nil and "hedge" or "key")
            .. "' does not apply to a batch", 4)
    end
    local timeout, idempotent, attempts, attempt_timeout, _, _, _, block =
      call_options(fname, opts, 2) -- below send_batch and its caller
    return timeout, idempotent, attempts, attempt_timeout, nil, nil, nil,
           block
  end

  local function start_batch(target, h, requests, ...)
    return pool_batch(h, requests, target, ...)
  end

  -- Sends requests as a batch to target (a task, or a function for the
  -- callback form), or waits for it; what pool:batch returns.
  local function send_batch(self, fname, requests, opts, cb)
    if type(requests) ~= "table" then
      error(fname .. ": expected an array of requests, got " .. type(requests),
            3)
    end
    if requests[1] == nil then
      error(fname .. ": the batch is empty", 3)
    end
    local h = self._h
    if cb ~= nil then
      if type(cb) ~= "function" then
        error(fname .. ": expected a callback function, got " .. type(cb), 3)
      end
      if opts == nil then
        return pool_batch(h, requests, cb)
      end
      return pool_batch(h, requests, cb, batch_options(fname, opts))
    end
    if opts == nil then
      return await(fname, start_batch, h, requests)
    end
    return await(fname, start_batch, h, requests, batch_options(fname, opts))
  end

  --- pool:batch(requests, opts) -> replies | nil, err. Sends the array of
  -- requests on one connection in one write. replies[i] is what pool:call
  -- would return for requests[i]: its reply, or an error object
  -- (resilnet.is_error) for an error reply or a request the server refused
  -- unrun; replies.n is the count. nil, err only when the batch failed as
  -- a whole (its connection, its deadline, the pool closing): the retry
  -- rules apply to it as one call (docs/retry-rules.md section 1b).
  -- pool:batch(requests, [opts,] cb): cb(replies, err) once, from the loop.
  function Pool:batch(requests, opts, cb)
    if opts == nil and cb == nil then
      -- The usual form in a task: sent and waited for by the binding
      -- (false: not here, or not a batch it sends; the long way below).
      local replies, err = batch_wait(self, requests)
      if replies ~= false then
        return replies, err
      end
    end
    if cb == nil and type(opts) == "function" then
      opts, cb = nil, opts
    end
    -- Not a tail call: send_batch's errors blame the caller of this one.
    local replies, err = send_batch(self, "pool:batch", requests, opts, cb)
    return replies, err
  end

  -- EXEC's answer as the transaction's: its array, or the error saying
  -- why nothing ran.
  local function exec_result(replies, err)
    if replies == nil then
      return nil, err
    end
    local multi, exec = replies[1], replies[replies.n]
    if is_error(multi) then
      -- Refused MULTI (-NOAUTH, -LOADING): the commands after it were
      -- refused too or ran on their own; EXEC's error says which.
      return nil, new_error(multi.code, "transaction: MULTI refused: "
                            .. multi.message, multi.attempts, true,
                            multi.endpoint)
    end
    if is_error(exec) then
      if exec.message:sub(1, 9) == "EXECABORT" then
        local why = exec.message
        for i = 2, replies.n - 1 do
          if is_error(replies[i]) then
            why = "command " .. (i - 1) .. " was rejected: "
                  .. replies[i].message
            break
          end
        end
        return nil, new_error("EXECABORT", "transaction not run: " .. why,
                              exec.attempts, false, exec.endpoint)
      end
      return nil, exec
    end
    if exec == core.null then
      return nil, new_error("EWATCH", "transaction aborted by WATCH: a "
                            .. "watched key changed, nothing ran",
                            multi.attempts, false, multi.endpoint)
    end
    return exec
  end

  local max_batch_default = opt.entry(pool_schema, "max_batch")[3]
  local transaction_words = { MULTI = true, EXEC = true, DISCARD = true,
                              WATCH = true }
  -- Their first letters, either case: most names are told apart by it
  -- without making an upper-case copy.
  local transaction_first, byte = {}, string.byte
  for w in pairs(transaction_words) do
    transaction_first[byte(w)] = true
    transaction_first[byte(w:lower())] = true
  end

  --- pool:transaction(requests, opts) -> EXEC's array | nil, err (resp):
  -- MULTI, the requests and EXEC as one batch on one connection. err.code
  -- "EXECABORT" (a queued command was rejected) or "EWATCH" (a WATCHed
  -- key changed): nothing ran, maybe_executed false. Sent again after it
  -- was written only if opts.idempotent. Callback form as for pool:batch.
  function Pool:transaction(requests, opts, cb)
    if cb == nil and type(opts) == "function" then
      opts, cb = nil, opts
    end
    if self.options.protocol ~= "resp" then
      error("pool:transaction: needs protocol 'resp', not '"
            .. tostring(self.options.protocol) .. "'", 2)
    end
    if type(requests) ~= "table" then
      error("pool:transaction: expected an array of requests, got "
            .. type(requests), 2)
    end
    -- max_batch bounds the batch sent: the caller's commands, MULTI and
    -- EXEC. The error counts (and names) what the caller gave.
    local n = core.array_count(requests, "pool:transaction")
    local max = (self.options.max_batch or max_batch_default) - 2
    if n > max then
      error("pool:transaction: " .. n .. " commands are more than the "
            .. max .. " a transaction may carry (max_batch "
            .. (max + 2) .. " counts its MULTI and EXEC too)", 2)
    end
    local all = { { "MULTI" } }
    for i = 1, n do
      local r = requests[i]
      if r == nil then
        error("pool:transaction: requests[" .. i .. "] is nil (expected an "
              .. "array)", 2)
      end
      -- Redis answers these inside MULTI with an error that does not
      -- abort it (a nested MULTI, WATCH), or acts on the transaction
      -- itself (EXEC, DISCARD): EXEC's array would then not match the
      -- requests, or some would run outside the transaction.
      local name = type(r) == "table" and r[1]
                   or type(r) == "string" and r:match("^%s*(%S+)")
      if type(name) == "string" and transaction_first[byte(name)]
         and transaction_words[name:upper()] then
        error("pool:transaction: requests[" .. i .. "] is " .. name:upper()
              .. ", which cannot be inside a transaction (WATCH goes before "
              .. "it, on a held connection: pool:hold)", 2)
      end
      all[i + 1] = r
    end
    all[#all + 1] = { "EXEC" }
    if cb ~= nil then
      if type(cb) ~= "function" then
        error("pool:transaction: expected a callback function, got "
              .. type(cb), 2)
      end
      local ok, err = send_batch(self, "pool:transaction", all, opts,
        function(replies, e) cb(exec_result(replies, e)) end)
      return ok, err -- not a tail call, as in pool:batch
    end
    return exec_result(send_batch(self, "pool:transaction", all, opts))
  end

  --- pool:on(event, fn): fn(ev) runs for every event of that type.
  function Pool:on(event, fn)
    add_handler(self, "pool:on", events, event, fn) -- not a tail call: the
    return self                                     -- error level counts it
  end

  function Pool:stats()
    local s = core.pool_stats(self._h)
    if self._discovery then
      s.discovery = self._discovery:stats_copy()
    end
    return s
  end

  --- Forgets the reconnect backoff of every endpoint and connects again at
  -- once if calls are waiting: for when the application knows a server is
  -- back.
  function Pool:reset_backoff()
    core.pool_reset_backoff(self._h)
  end

  local tls_fields = opt.entry(pool_schema, "tls")[2].table

  --- pool:reload_tls{cafile = ..., certificate = ..., key = ..., ...}:
  -- certificate rotation. The files are read now; new connections use
  -- them, open ones keep theirs until they retire (max_lifetime,
  -- idle_timeout). true, or nil, err if a file cannot be used (nothing
  -- changes then); raises on bad options or a pool made without tls.
  function Pool:reload_tls(opts)
    if type(opts) ~= "table" then
      error("pool:reload_tls: expected a table of TLS options, got "
            .. type(opts), 2)
    end
    check_table("pool:reload_tls", "", tls_fields, opts, 3)
    return core.pool_reload_tls(self._h, { tls = opts })
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
    local h = self._h
    if self._discovery then
      -- A run going on is abandoned: its answer must not reach a closed
      -- pool. Its helpers (a Sentinel's poll and pools) close with it.
      self._discovery:close()
    end
    if self._closing and o.reset then
      core.pool_close(h, 0, nil, true) -- a graceful close already started
    end
    -- A plain callback (an event handler, a send callback) cannot wait: the
    -- close it started goes on from the loop.
    return close_and_wait("pool:close", self, true, function(on_closed)
      core.pool_close(h, ms(o.drain), on_closed, o.reset)
    end)
  end

  -- Held connections (pool:hold): resilnet/hold.lua.
  require("resilnet.hold")(core, T, Pool)
  -- Subscriptions (pool:subscribe): resilnet/subscription.lua.
  require("resilnet.subscription")(core, T, Pool)

  return P
end
