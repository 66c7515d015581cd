-- resilnet.options: one schema per function. Each entry names an option,
-- its check and its default; the schema is both what the code accepts and
-- what the documentation lists (resilnet._options, compared by a test).
-- No state but caches: shared by every load of resilnet.
local error, math, pairs, setmetatable, tostring, type = error, math, pairs,
      setmetatable, tostring, type

local M = {}


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

M.schemas = {
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

M.is_integer, M.types, M.nested, M.hedge_fields = is_integer, types, nested,
  hedge_fields
M.check_table, M.validate, M.ms = check_table, validate, ms
return M
