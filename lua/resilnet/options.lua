-- resilnet.options: one schema per function. Each entry names an option,
-- its check and its default; the schema is both what the code accepts and
-- what the documentation lists (resilnet._options, compared by a test).
-- No state but caches: shared by every load of resilnet (the pool and
-- server schemas come from the binding, which is one per lua_State).
local core = require "resilnet.core"

local error, ipairs, math, pairs, setmetatable, table, tostring, type =
      error, ipairs, math, pairs, setmetatable, table, tostring, type

local M = {}


local function is_integer(v)
  return type(v) == "number" and v == math.floor(v) and v > -math.huge
    and v < math.huge
end

local types = {
  -- (The pool's and server's own are the binding's: lua/src/options.c.)
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
  token = { "a string of 1 to 255 bytes", function(v)
    return type(v) == "string" and #v >= 1 and #v <= 255
  end },
  key = { "true or a string of 1 to 255 bytes", function(v)
    return v == true or (type(v) == "string" and #v >= 1 and #v <= 255)
  end },
  -- A blocking call's bound, in seconds (0: none, as BLPOP's 0); capped
  -- so that its milliseconds stay an integer everywhere.
  block = { "a number of seconds from 0 to 1e9", function(v)
    return type(v) == "number" and v >= 0 and v <= 1e9
  end },
}

-- A nested table option: `fields` is its own schema; `or_false` allows
-- false (switched off); `on` means it is on, with every default, when the
-- caller leaves it out (heartbeats) rather than off (hedging).
local function nested(fields, or_false, on)
  return { table = fields, or_false = or_false, on = on }
end

-- The pool and server options stored in the core's option structs come
-- from the binding (lua/src/pool.c, lua/src/server.c: one descriptor row
-- each): their names, their defaults (read from rn_pool_options_init and
-- rn_server_options_init, in seconds), the protocol they are limited to.
-- Their entries are marked core = true: the binding checks them when it
-- reads them, with the same messages, so they are not checked here too.
-- What stays here is what only Lua has: functions, the endpoint list, the
-- dedupe store, the listen address and the handler.
local function entry(schema, name)
  for _, e in ipairs(schema) do
    if e[1] == name then return e end
  end
  error("resilnet.options: the binding has no option '" .. name .. "'")
end

local pool_schema = core.pool_options()
table.insert(pool_schema, 1,
             { "endpoints", "endpoints", nil, required = true })
-- An endpoints function runs as a task (lua/resilnet/discovery.lua): the
-- seconds one run may take, and the most a ttl-driven run is delayed.
pool_schema[#pool_schema + 1] = { "discovery_timeout", "positive", 5 }
pool_schema[#pool_schema + 1] = { "discovery_jitter", "seconds", 1 }
-- classify(err, request) -> "retry" | "fail" | nil (see README)
local retry_fields = entry(pool_schema, "retry")[2].table
retry_fields[#retry_fields + 1] = { "classify", "function" }
-- resp: the Redis error codes that prove nothing ran (docs/retry-rules.md);
-- nil: the built-in table, false: none. Read by lua/src/pool.c itself (a
-- list of strings is not a descriptor field).
types.error_codes = { "false or an array of Redis error codes (strings)",
  function(v)
    if v == false then return true end
    if type(v) ~= "table" then return false end
    for k, e in pairs(v) do
      if not is_integer(k) or k < 1 or k > #v or type(e) ~= "string"
         or e == "" then
        return false
      end
    end
    return true
  end }
retry_fields[#retry_fields + 1] = { "not_executed", "error_codes" }
-- Requests every new connection sends before it takes calls: resp, arrays
-- of words ({"AUTH", user, pw}, {"SELECT", 2}); line, length and rnp,
-- request bodies. Read by lua/src/pool.c itself (a list of lists is not a
-- descriptor field), which also checks them against the protocol.
types.setup_requests = { "an array of requests", function(v)
    if type(v) ~= "table" then return false end
    for k, e in pairs(v) do
      if not is_integer(k) or k < 1 or k > #v then return false end
      if type(e) == "table" then
        if #e == 0 then return false end
        for j, w in pairs(e) do
          if not is_integer(j) or j < 1 or j > #e
             or (type(w) ~= "string" and not is_integer(w)) then
            return false
          end
        end
      elseif type(e) ~= "string" then
        return false
      end
    end
    return true
  end }
pool_schema[#pool_schema + 1] = { "setup", "setup_requests" }
types.role = { 'one of "any", "master", "replica"', function(v)
  return v == "any" or v == "master" or v == "replica"
end }
-- A call's hedge takes what the pool's does, checked here: per-call
-- options never reach the binding's reader (pool:call's hot path).
local hedge_fields = {}
for i, e in ipairs(entry(pool_schema, "hedge")[2].table) do
  hedge_fields[i] = { e[1], e[2], e[3] }
end

-- A dedupe store: a table (or object) with claim, finish and release
-- methods (see README, "Dedupe stores").
types.dedupe_store = { "a table with claim, finish and release functions",
  function(v)
    local t = type(v)
    if t ~= "table" then return false end
    return type(v.claim) == "function" and type(v.finish) == "function"
      and type(v.release) == "function"
  end }

local server_schema = core.server_options()
table.insert(server_schema, 1, { "listen", "string", nil, required = true })
table.insert(server_schema, 3,
             { "handler", "function", nil, required = true })
local dedupe_fields = entry(server_schema, "dedupe")[2].table  -- rnp
dedupe_fields[#dedupe_fields + 1] = { "store", "dedupe_store" }
-- Who may talk to an rnp server (resilnet/auth.h): tokens, a function, a
-- verified client certificate. Read by lua/src/server_tls.c; not core
-- rows (a function and a list of tokens are not descriptor fields).
types.auth_tokens = { "a non-empty array of tokens (strings of 1 to 255 "
  .. "bytes, or {token = ..., identity = ...})", function(v)
    if type(v) ~= "table" or #v == 0 then return false end
    for k, e in pairs(v) do
      if not is_integer(k) or k < 1 or k > #v then return false end
      if type(e) == "table" then
        if e.identity ~= nil and type(e.identity) ~= "string" then
          return false
        end
        e = e.token
      end
      if type(e) ~= "string" or #e < 1 or #e > 255 then return false end
    end
    return true
  end }
server_schema[#server_schema + 1] = { "auth", nested({
  { "tokens", "auth_tokens" },
  { "check", "function" },
  { "certificate", "boolean", false },
}), protocol = "rnp" }

local call_schema = {
  { "idempotent", "boolean", false },
  { "timeout", "positive" },  -- default: the pool's timeout
  { "key", "key" },
  { "attempts", "attempts" },  -- default: the pool's retry.attempts
  { "attempt_timeout", "positive" },  -- default: the pool's
  { "hedge", nested(hedge_fields, true) },
  { "blocking", "boolean", false },  -- BLPOP & co: see docs/api.md
  { "block", "block" },  -- BLPOP key 5: block = 5 (implies blocking)
}

-- pool:hold's options, and a held call's (conn:call): no retries, no
-- hedge, no key: a held call has one connection and one attempt.
local hold_schema = {
  { "timeout", "positive" },  -- the wait for a connection; the pool's
}
local held_call_schema = {
  { "timeout", "positive" },  -- default: the pool's timeout
  { "blocking", "boolean", false },
  { "block", "block" },
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
  hold = hold_schema,
  held_call = held_call_schema,
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
      ok = e.core or types[kind][2](v)
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
  -- (A protocol left out is the default one: resp's options apply.)
  local protocol = opts.protocol
  if protocol == nil then
    for _, e in pairs(schema) do
      if e[1] == "protocol" then protocol = e[3] end
    end
  end
  for _, e in pairs(schema) do
    if e.protocol and opts[e[1]] ~= nil and protocol ~= e.protocol then
      error(fname .. ": option '" .. e[1] .. "' applies only to protocol '"
            .. e.protocol .. "'", level)
    end
  end
  return with_defaults(schema, opts)
end

local function ms(seconds)
  return math.ceil(seconds * 1000)
end

-- The binding's `block` argument from a call's options (checked): false,
-- true (blocking, silence excused as long as it is out), or the ms its
-- silence is excused (block = seconds; 0 as BLPOP's 0: no bound). block
-- with blocking = false contradicts itself: raises at level.
local function block_arg(fname, opts, level)
  local block = opts.block
  if block == nil then
    return opts.blocking == true
  end
  if opts.blocking == false then
    error(fname .. ": option 'block' makes a blocking call: it cannot go "
          .. "with blocking = false", level)
  end
  return ms(block)
end

M.block_arg = block_arg
M.is_integer, M.types, M.nested, M.hedge_fields = is_integer, types, nested,
  hedge_fields
M.entry = entry
M.check_table, M.validate, M.ms = check_table, validate, ms
return M
