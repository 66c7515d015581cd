-- resilnet.proxy: the fault-injection proxy for test harnesses;
-- docs/harness.md has the whole story.
-- Returns a constructor: build(core, tasks) -> { new = resilnet.proxy }.
local opt = require "resilnet.options"

local error, math, pairs, setmetatable, tostring, type = error, math, pairs,
      setmetatable, tostring, type
local validate, types, is_integer = opt.validate, opt.types, opt.is_integer

return function(core, T)
  local X = {}
  local close_and_wait = T.close_and_wait

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
  function X.new(opts)
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
    local h = self._h
    return close_and_wait("proxy:close", self, false, function(on_closed)
      core.proxy_close(h, on_closed)
    end)
  end

  return X
end
