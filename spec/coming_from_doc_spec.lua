-- docs/coming-from.md against the code: every resilnet option it names
-- exists, and every default it states is the code's. The page maps other
-- clients' settings to resilnet's, so a renamed option or a changed
-- default would otherwise leave it quietly wrong.
--
-- What is checked, in the resilnet column (the second) of each table:
--   `name`                 a pool or call option (dotted when nested), if
--                          lower case and not a C function (rn_...), an
--                          error field (err.code, maybe_executed) or a
--                          function of the module (resilnet.pool)
--   `name` (N ...)         also: N is its default
--   `name = value`         the option exists (value is not a default:
--                          `idempotent = true`)
-- and anywhere on the page:
--   `name = { k = v, ... }`  each k is a field of name and v its default
-- plus: every relative link points at a file that exists.
local resilnet = require "resilnet"

local loadstring = loadstring or load

local H = require "spec.helpers.util"
local source_dir, read_file = H.source_dir, H.read_file

-- Dotted option name -> entry, over the pool and call schemas; a nested
-- option's entry is { fields = <its own map> }.
local function option_map()
  local map = {}
  local function add(schema, prefix)
    for _, e in pairs(schema) do
      local name, kind = prefix .. e[1], e[2]
      if type(kind) == "table" then
        map[name] = { nested = true }
        add(kind.table, name .. ".")
      elseif not map[name] then
        map[name] = { default = e[3] }
      end
    end
  end
  add(resilnet._options.pool, "")
  add(resilnet._options.call, "")
  return map
end

-- Lower-case words in that column that are not options: fields of an
-- error object (err.code and the like are told apart by their prefix).
local not_options = { maybe_executed = true }

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- The second cell of each table row that is not a header or separator.
local function resilnet_cells(doc)
  local out, in_table = {}, false
  for line in (doc .. "\n"):gmatch("([^\n]*)\n") do
    if line:match("^|") then
      local cells = {}
      for cell in line:gsub("\\|", "\1"):gmatch("|([^|]*)") do
        cells[#cells + 1] = trim(cell:gsub("\1", "|"))
      end
      if not in_table then
        in_table = true            -- the header row
      elseif not (cells[1] or ""):match("^:?%-%-") and cells[2] then
        out[#out + 1] = cells[2]
      end
    else
      in_table = false
    end
  end
  return out
end

local function literal(text)
  local fn = loadstring("return " .. text)
  if not fn then return nil, false end
  local ok, v = pcall(fn)
  return v, ok
end

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function check(doc)
  local options, problems = option_map(), {}
  local function bad(fmt, ...) problems[#problems + 1] = fmt:format(...) end

  local function check_default(name, text)
    local e = options[name]
    local v, ok = literal(text)
    if not ok then
      bad("`%s`: cannot read the value '%s'", name, text)
    elseif v ~= e.default then
      bad("`%s`: the page says %s, the code's default is %s", name, show(v),
          show(e.default))
    end
  end

  -- `name = { k = v, ... }` anywhere: fields and their defaults.
  for name, body in doc:gmatch("`([%w_%.]+) = (%b{})`") do
    if not (options[name] and options[name].nested) then
      bad("`%s = {...}`: no nested option '%s'", name, name)
    else
      for k, v in body:sub(2, -2):gmatch("([%w_]+) = ([^,]+)") do
        local field = name .. "." .. k
        if not options[field] or options[field].nested then
          bad("`%s`: no such option", field)
        else
          check_default(field, trim(v))
        end
      end
    end
  end

  for _, cell in ipairs(resilnet_cells(doc)) do
    -- `name` (N...): the default.
    for name, n in cell:gmatch("`([%w_%.]+)` %((%-?[%d%.]+)") do
      if options[name] then check_default(name, n) end
    end
    for code in cell:gmatch("`([^`]+)`") do
      local name = code:match("^([%l_][%l%d_%.]*)$")
        or code:match("^([%l_][%l%d_%.]*) = ")
      if name and not not_options[name] and not name:match("^rn_")
         and not name:match("^err%.") and not name:match("^resilnet%.")
         and not options[name] then
        bad("`%s` (in '%s'): not a pool or call option", name, cell)
      end
    end
  end

  for target in doc:gmatch("%]%(([^)#:]+)[^)]*%)") do
    local f = io.open(source_dir() .. "docs/" .. target, "rb")
    if f then f:close() else bad("link to %s: no such file", target) end
  end
  return problems
end

describe("docs/coming-from.md", function()
  local doc = read_file(source_dir() .. "docs/coming-from.md")

  it("names only options the code has, with the code's defaults", function()
    local problems = check(doc)
    assert.are.same({}, problems)
  end)

  it("would notice a wrong default or a wrong name", function()
    local broken = doc:gsub("`size` %(8%)", "`size` (9)", 1)
      :gsub("`max_pending`", "`max_waiting`", 1)
      :gsub("interval = 1, timeout = 3", "interval = 1, timeout = 4", 1)
    local problems = table.concat(check(broken), "\n")
    assert.truthy(problems:find("`size`: the page says 9", 1, true), problems)
    assert.truthy(problems:find("`max_waiting`", 1, true), problems)
    assert.truthy(problems:find("`heartbeat.timeout`: the page says 4", 1,
                                true), problems)
  end)
end)
