-- resilnet.hold: pool:hold(fn, opts) and the held connection it hands fn.
-- Returns an installer: install(core, T, Pool) adds Pool:hold.
local opt = require "resilnet.options"

local coroutine, error, pcall, select, setmetatable, type = coroutine,
      error, pcall, select, setmetatable, type
local unpack = table.unpack or unpack
local check_table, ms, block_arg = opt.check_table, opt.ms, opt.block_arg

local hold_schema, held_call_schema = opt.schemas.hold,
      opt.schemas.held_call

-- Whether a coroutine may yield inside pcall (5.2+ and LuaJIT; not 5.1):
-- then an error in fn gives the connection back at once; on 5.1 the
-- collector does (and closes it).
local yield_in_pcall = coroutine.wrap(function()
  return pcall(coroutine.yield, true)
end)() == true

local function pack(...)
  return { n = select("#", ...), ... }
end

return function(core, T, Pool)
  local await = T.await
  local pool_hold, hold_send, hold_batch, hold_release = core.pool_hold,
        core.hold_send, core.hold_batch, core.hold_release

  local function check_opts(fname, schema, opts)
    if opts == nil then
      return nil
    end
    if type(opts) ~= "table" then
      error(fname .. ": expected a table of options, got " .. type(opts), 4)
    end
    check_table(fname, "", schema, opts, 5)
    return opts
  end

  -- hold_send's option arguments: timeout (ms, 0: the pool's), block
  -- (opt.block_arg).
  local function call_args(fname, opts)
    local o = check_opts(fname, held_call_schema, opts)
    if o == nil then
      return 0, false
    end
    return o.timeout and ms(o.timeout) or 0, block_arg(fname, o, 4)
  end

  --- The connection pool:hold hands its function: calls go on it alone.
  local Conn = {}
  Conn.__index = Conn

  local function start_send(target, h, request, timeout, block)
    return hold_send(h, request, target, timeout, block)
  end

  --- conn:call(request, opts) -> reply | nil, err. opts: timeout,
  -- blocking, block. Never retried, never sent elsewhere.
  function Conn:call(request, opts)
    return await("conn:call", start_send, self._h, request,
                 call_args("conn:call", opts))
  end

  --- conn:send(request, [opts,] cb) -> true | nil, err; cb(reply, err)
  -- once, from the loop.
  function Conn:send(request, opts, cb)
    if cb == nil then
      opts, cb = nil, opts
    end
    if type(cb) ~= "function" then
      error("conn:send: expected a callback function, got " .. type(cb), 2)
    end
    return hold_send(self._h, request, cb, call_args("conn:send", opts))
  end

  local function start_batch(target, h, requests, timeout, block)
    return hold_batch(h, requests, target, timeout, block)
  end

  --- conn:batch(requests, [opts,] [cb]): pool:batch on this connection.
  function Conn:batch(requests, opts, cb)
    if cb == nil and type(opts) == "function" then
      opts, cb = nil, opts
    end
    if type(requests) ~= "table" then
      error("conn:batch: expected an array of requests, got "
            .. type(requests), 2)
    end
    local timeout, block = call_args("conn:batch", opts)
    if cb ~= nil then
      if type(cb) ~= "function" then
        error("conn:batch: expected a callback function, got " .. type(cb),
              2)
      end
      return hold_batch(self._h, requests, cb, timeout, block)
    end
    return await("conn:batch", start_batch, self._h, requests, timeout,
                 block)
  end

  --- conn:unknown() -> whether giving the connection back now would close
  -- it (calls out, an open MULTI or WATCH, a SUBSCRIBE, a failed call).
  function Conn:unknown()
    return core.hold_unknown(self._h)
  end

  local function start_hold(target, h, timeout)
    return pool_hold(h, target, timeout)
  end

  --- pool:hold(fn, opts) -> what fn returns | nil, err. Waits (up to
  -- opts.timeout, the pool's timeout by default) for an idle connection,
  -- runs fn(conn) with it reserved, and gives it back when fn returns or
  -- raises (then re-raised): closed instead of reused when its state is
  -- unknown (see conn:unknown).
  function Pool:hold(fn, opts)
    if type(fn) ~= "function" then
      error("pool:hold: expected a function, got " .. type(fn), 2)
    end
    local o = check_opts("pool:hold", hold_schema, opts)
    local timeout = o and o.timeout and ms(o.timeout) or 0
    local h, err = await("pool:hold", start_hold, self._h, timeout)
    if not h then
      return nil, err
    end
    local conn = setmetatable({ _h = h }, Conn)
    if not yield_in_pcall then
      local results = pack(fn(conn))
      hold_release(h)
      return unpack(results, 1, results.n)
    end
    local results = pack(pcall(fn, conn))
    hold_release(h)
    if not results[1] then
      error(results[2], 0)
    end
    return unpack(results, 2, results.n)
  end
end
