-- docs/api.md against the code: every option, event, statistic and public
-- function the code has is documented, nothing is documented that the code
-- does not have, and documented defaults are the code's defaults.
--
-- The doc marks what it lists with HTML comments before each table:
--   <!-- options: NAME -->  option tables, NAME a key of resilnet._options,
--                           or proxy / process
--   <!-- faults -->         proxy fault kinds and the options each takes
--   <!-- events: pool -->   event names, first column (also: server)
--   <!-- stats: pool -->    stats fields, first column (also: server)
-- and headings "### `resilnet.spawn(fn, ...)`", "### `pool:call(...)`".
--
-- Option rows: | `name` | type | default | meaning |, nested options as
-- `retry.budget.tokens`. The default cell is `lua literal` (evaluated),
-- required, none (no default), on or off (a nested table used, or not,
-- when left out; none for a nested one: not used unless given). A type cell that mentions `false` means the option takes
-- false. "only with protocol `x`" in the meaning means the code restricts
-- the option to that protocol.
--
-- The proxy, fault and process option lists are not in resilnet._options;
-- until they are, they are read from the functions' upvalues.
local resilnet = require "resilnet"

local loadstring = loadstring or load

local H = require "spec.helpers.util"
local source_dir, read_file = H.source_dir, H.read_file

---------------------------------------------------------------------------
-- Parsing the document

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- The cells of one table row, or nil if the line is not a row.
local function cells(line)
  if not line:match("^%s*|") then return nil end
  line = line:gsub("\\|", "\1")
  local out = {}
  for cell in line:gmatch("|([^|]*)") do
    out[#out + 1] = trim(cell:gsub("\1", "|"))
  end
  if out[#out] == "" then out[#out] = nil end
  return out
end

-- marker text -> array of rows (each an array of cells), header and
-- separator dropped.
local function parse_tables(doc)
  local tables, current, seen_header = {}, nil, false
  for line in (doc .. "\n"):gmatch("([^\n]*)\n") do
    local marker = line:match("^%s*<!%-%-%s*(.-)%s*%-%->%s*$")
    if marker then
      current, seen_header = {}, false
      if tables[marker] then
        error("docs/api.md: marker '" .. marker .. "' appears twice")
      end
      tables[marker] = current
    elseif current then
      local row = cells(line)
      if row then
        if not seen_header then
          seen_header = true
        elseif not row[1]:match("^:?%-%-") then
          current[#current + 1] = row
        end
      elseif #current > 0 or seen_header then
        current = nil -- the table ended
      end
    end
  end
  return tables
end

-- `name` -> name, or nil.
local function code_name(cell)
  return cell and cell:match("^`([%w_%.%[%]]+)`$")
end

-- Names of the ### `...` headings: "resilnet.spawn", "pool:call", ...
local function parse_headings(doc)
  local out = {}
  for line in (doc .. "\n"):gmatch("([^\n]*)\n") do
    local name = line:match("^#+%s+`([%w_%.:]+)")
    if name then out[#out + 1] = name end
  end
  return out
end

---------------------------------------------------------------------------
-- What the code has

local function upvalue(fn, name)
  local i = 1
  while true do
    local n, v = debug.getupvalue(fn, i)
    if n == nil then break end
    if n == name then return v end
    i = i + 1
  end
  error("the facade (lua/resilnet/) changed shape: no upvalue '" .. name
        .. "'; expose the list in resilnet._options instead")
end

-- A schema as a flat map: dotted name -> { default, required, protocol,
-- nested, on, or_false }.
local function flatten(schema, prefix, out)
  out = out or {}
  for _, e in pairs(schema) do
    local name, kind = (prefix or "") .. e[1], e[2]
    if type(kind) == "table" then
      out[name] = { nested = true, on = kind.on and true or false,
                    or_false = kind.or_false and true or false }
      flatten(kind.table, name .. ".", out)
    else
      out[name] = { default = e[3], required = e.required and true or false,
                    protocol = e.protocol }
    end
  end
  return out
end

local function sorted_keys(t)
  local out = {}
  for k in pairs(t) do out[#out + 1] = k end
  table.sort(out)
  return out
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

---------------------------------------------------------------------------
-- Comparisons: each returns a list of problems (strings).

-- rows: a doc option table; code: a flattened schema.
local function compare_options(what, rows, code, problems)
  problems = problems or {}
  local function bad(fmt, ...)
    problems[#problems + 1] = what .. ": " .. fmt:format(...)
  end
  local documented = {}
  for _, row in ipairs(rows or {}) do
    local name = code_name(row[1])
    if not name then
      bad("a row's first cell is not one `name`: %s", tostring(row[1]))
    elseif documented[name] then
      bad("'%s' is documented twice", name)
    else
      documented[name] = true
      local e = code[name]
      local tcell, dcell, meaning = row[2] or "", row[3] or "", row[4] or ""
      if not e then
        bad("'%s' is documented but the code does not accept it", name)
      elseif e.nested then
        if dcell ~= "on" and dcell ~= "off" and dcell ~= "none" then
          bad("'%s' is a nested table: its default must read on, off or "
              .. "none, not '%s'", name, dcell)
        elseif (dcell == "on") ~= e.on then
          bad("'%s': documented %s, but the code has it %s when left out",
              name, dcell, e.on and "on" or "off")
        end
        if (tcell:find("`false`", 1, true) ~= nil) ~= e.or_false then
          bad("'%s': the code %s false, the type column %s", name,
              e.or_false and "accepts" or "rejects",
              e.or_false and "does not say so" or "says it does")
        end
      else
        if dcell == "required" then
          if not e.required then bad("'%s' is not required", name) end
        elseif e.required then
          bad("'%s' is required, the doc says default '%s'", name, dcell)
        elseif dcell == "none" then
          if e.default ~= nil then
            bad("'%s': the code's default is %s, the doc says none", name,
                show(e.default))
          end
        else
          local expr = dcell:match("^`(.*)`$")
          local fn = expr and loadstring("return " .. expr)
          if not fn then
            bad("'%s': default '%s' is not `lua`, required or none", name,
                dcell)
          else
            local v = fn()
            if v ~= e.default then
              bad("'%s': documented default %s, the code's is %s", name,
                  show(v), show(e.default))
            end
          end
        end
        local proto = meaning:match("only with protocol `([%w_]+)`")
        if proto ~= e.protocol then
          bad("'%s': the code restricts it to protocol %s, the doc to %s",
              name, tostring(e.protocol), tostring(proto))
        end
      end
    end
  end
  for _, name in ipairs(sorted_keys(code)) do
    if not documented[name] then
      bad("'%s' is accepted by the code but not documented", name)
    end
  end
  return problems
end

-- Two sets of names (first column of rows vs keys of code).
local function compare_names(what, rows, code, problems)
  problems = problems or {}
  local documented = {}
  for _, row in ipairs(rows or {}) do
    local name = code_name(row[1])
    if not name then
      problems[#problems + 1] = what .. ": not one `name`: "
        .. tostring(row[1])
    else
      documented[name] = true
      if not code[name] then
        problems[#problems + 1] = what .. ": '" .. name
          .. "' is documented but the code does not have it"
      end
    end
  end
  for _, name in ipairs(sorted_keys(code)) do
    if not documented[name] then
      problems[#problems + 1] = what .. ": '" .. name
        .. "' is in the code but not documented"
    end
  end
  return problems
end

local function set_of(list)
  local out = {}
  for _, v in pairs(list) do out[v] = true end
  return out
end

-- A stats table as flat names: evictions.idle, endpoints[].state, ...
local function stats_names(stats)
  local out = {}
  for k, v in pairs(stats) do
    if type(v) == "table" and k == "endpoints" then
      for k2 in pairs(v[1] or {}) do out["endpoints[]." .. k2] = true end
    elseif type(v) == "table" then
      for k2 in pairs(v) do out[k .. "." .. k2] = true end
    else
      out[k] = true
    end
  end
  return out
end

local function assert_none(problems)
  if #problems > 0 then
    error("docs/api.md does not match the code:\n  "
          .. table.concat(problems, "\n  "), 2)
  end
end

---------------------------------------------------------------------------

describe("docs/api.md", function()
  local doc = read_file(source_dir() .. "docs/api.md")
  local tables = parse_tables(doc)
  local pool, server, px, proc

  setup(function()
    -- Nothing here connects: pools connect lazily, the proxy's upstream
    -- is never dialled without a client.
    -- An endpoints function: its stats (discovery.*) are listed too.
    pool = resilnet.pool{ endpoints = function() return { "127.0.0.1:1" } end }
    server = assert(resilnet.server{ listen = "127.0.0.1:0",
                                     handler = function() end })
    px = assert(resilnet.proxy{ upstream = "127.0.0.1:1" })
    proc = assert(resilnet.process{ "true", stdout = false })
  end)

  teardown(function()
    if proc then proc:close() end
    if px then px:close() end
    if server then server:close() end
    if pool then pool:close() end
  end)

  it("documents every option of resilnet._options, with its default", function()
    local problems = {}
    for _, name in ipairs(sorted_keys(resilnet._options)) do
      local rows = tables["options: " .. name]
      if not rows then
        problems[#problems + 1] = "no table marked <!-- options: " .. name
          .. " -->"
      else
        compare_options(name, rows, flatten(resilnet._options[name]),
                        problems)
      end
    end
    assert_none(problems)
  end)

  it("documents resilnet.redis.sentinel's options, with their defaults",
     function()
    local problems = compare_options("redis.sentinel",
      tables["options: redis.sentinel"],
      flatten(require("resilnet.redis").sentinel_options))
    assert_none(problems)
  end)

  it("documents the proxy's options", function()
    local schema = resilnet._options.proxy
      or upvalue(resilnet.proxy, "proxy_schema")
    assert_none(compare_options("proxy", tables["options: proxy"],
                                flatten(schema)))
  end)

  it("documents the process options", function()
    local fields = upvalue(resilnet.process, "process_fields")
    local code = {}
    for name in pairs(fields) do code[name] = { default = nil } end
    assert_none(compare_options("process", tables["options: process"], code))
  end)

  it("documents every fault kind with the options it takes", function()
    local fault = getmetatable(px).__index.fault
    local kinds = upvalue(fault, "fault_kinds")
    local rows = tables["faults"]
    assert.is_table(rows, "no table marked <!-- faults -->")
    local problems = compare_names("faults", rows, kinds)
    for _, row in ipairs(rows) do
      local kind = code_name(row[1])
      if kinds[kind] then
        local documented = {}
        for opt in (row[2] or ""):gmatch("`([%w_]+)`") do
          documented[#documented + 1] = { "`" .. opt .. "`" }
        end
        compare_names("fault " .. kind, documented, set_of(kinds[kind]),
                      problems)
      end
    end
    assert_none(problems)
  end)

  it("every documented fault option is accepted by px:fault", function()
    local sample = { ms = 1, jitter = 1, distribution = "normal",
                     kbps = 1000, bytes_per_second = 1000, bytes = 1,
                     delay_ms = 1, after_bytes = 1, after_ms = 1, rst = true,
                     rate = 0.5 }
    -- What each kind cannot do without.
    local base = { bandwidth = { kbps = 1000 }, slice = { bytes = 1 },
                   truncate = { after_bytes = 1 } }
    for _, row in ipairs(tables["faults"]) do
      local kind = code_name(row[1])
      local function try(extra)
        local spec = { kind = kind, direction = "up", toxicity = 0.5 }
        for k, v in pairs(base[kind] or {}) do spec[k] = v end
        for k, v in pairs(extra) do spec[k] = v end
        local ok, err = pcall(px.fault, px, spec)
        assert(ok, "px:fault{kind = '" .. kind .. "', ...}: "
               .. tostring(err))
      end
      try({})
      for opt in (row[2] or ""):gmatch("`([%w_]+)`") do
        assert(sample[opt] ~= nil, "no sample value for fault option "
               .. opt .. ": add one to this spec")
        try({ [opt] = sample[opt] })
      end
    end
    px:clear()
  end)

  it("documents every pool and server event", function()
    local pool_events = upvalue(getmetatable(pool).__index.on, "events")
    local server_events = upvalue(getmetatable(server).__index.on,
                                  "server_events")
    local problems = compare_names("pool events", tables["events: pool"],
                                   pool_events)
    compare_names("server events", tables["events: server"], server_events,
                  problems)
    assert_none(problems)
  end)

  it("documents every field of pool:stats() and server:stats()", function()
    local problems = compare_names("pool stats", tables["stats: pool"],
                                   stats_names(pool:stats()))
    compare_names("server stats", tables["stats: server"],
                  stats_names(server:stats()), problems)
    assert_none(problems)
  end)

  it("has a heading for every public function and method", function()
    local receivers = { resilnet = resilnet, pool = pool, server = server,
                        px = px, p = proc }
    local code = {}
    for k in pairs(resilnet) do code["resilnet." .. k] = true end
    for prefix, obj in pairs(receivers) do
      if prefix ~= "resilnet" then
        for k in pairs(getmetatable(obj).__index) do
          if type(k) == "string" and k:sub(1, 1) ~= "_" then
            code[prefix .. ":" .. k] = true
          end
        end
      end
    end
    local problems, documented = {}, {}
    for _, name in ipairs(parse_headings(doc)) do
      documented[name] = true
      local recv, sep, field = name:match("^([%w_]+)([%.:])([%w_]+)$")
      local obj = receivers[recv]
      local exists = obj ~= nil and (
        (sep == ":" and type(obj[field]) == "function") or
        (sep == "." and obj[field] ~= nil))
      if not exists then
        problems[#problems + 1] = "heading `" .. name
          .. "` names nothing the code has"
      end
    end
    for _, name in ipairs(sorted_keys(code)) do
      if not documented[name] then
        problems[#problems + 1] = "`" .. name .. "` has no heading"
      end
    end
    assert_none(problems)
  end)

  it("the comparison catches drift both ways and wrong defaults", function()
    local schema = {
      { "size", "count", 8 },
      { "name", "string", nil, required = true },
      { "delimiter", "delimiter", "\n", protocol = "line" },
      { "retry", { table = { { "attempts", "attempts", 3 } },
                   or_false = true, on = true } },
    }
    local good = parse_tables([[
<!-- options: t -->
| option | type | default | meaning |
|---|---|---|---|
| `size` | int | `8` | x |
| `name` | string | required | x |
| `delimiter` | s | `"\n"` | only with protocol `line` |
| `retry` | table or `false` | on | x |
| `retry.attempts` | int | `3` | x |
]])["options: t"]
    assert.same({}, compare_options("t", good, flatten(schema)))

    local bad = parse_tables([[
<!-- options: t -->
| option | type | default | meaning |
|---|---|---|---|
| `size` | int | `9` | x |
| `name` | string | none | x |
| `delimiter` | s | `"\n"` | x |
| `retry` | table | off | x |
| `ghost` | int | `1` | x |
]])["options: t"]
    local problems = compare_options("t", bad, flatten(schema))
    local text = table.concat(problems, "\n")
    assert.truthy(text:find("'size': documented default 9", 1, true))
    assert.truthy(text:find("'name' is required", 1, true))
    assert.truthy(text:find("'delimiter': the code restricts", 1, true))
    assert.truthy(text:find("'retry': documented off", 1, true))
    assert.truthy(text:find("'retry': the code accepts false", 1, true))
    assert.truthy(text:find("'ghost' is documented but", 1, true))
    assert.truthy(text:find("'retry.attempts' is accepted by the code but "
                            .. "not documented", 1, true))
  end)
end)
