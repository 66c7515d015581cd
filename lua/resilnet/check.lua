-- resilnet.check: a history checker for fault-injection tests.
--
-- A test records, for every call it makes, the invocation and how it
-- completed; the server under test keeps a ledger of what it executed.
-- The checker then holds the client's story against the server's:
--
--   local h = resilnet.check.history()
--   h:invoke(id, "plain")            -- "idempotent" | "keyed" | "plain"
--   local reply, err = pool:call(...)
--   h:complete(id, reply, err)       -- ok, fail or info, from err
--   ...
--   h:ledger(resilnet.check.read_ledger(path))   -- id -> executions
--   local v = h:verdict()            -- v.ok, v.violations, v.summary
--   h:assert()                       -- raises with the summary on violation
--
-- Outcomes: "ok" (a reply, error replies included: the server saw it),
-- "fail" (an error with maybe_executed == false: resilnet guarantees it did
-- not run) and "info" (an error that may have run). The rules:
--   * every call completes exactly once;
--   * a plain or keyed call ran exactly once if ok, never if fail, at most
--     once if info;
--   * an idempotent call may run more than once; it ran at least once if
--     ok and never if fail;
--   * the ledger names no call that was never invoked.
-- Pure Lua: usable with any client, not only resilnet's.
local M = {}

local History = {}
History.__index = History

local KINDS = { idempotent = true, keyed = true, plain = true }

--- history() -> a new, empty history.
function M.history()
  return setmetatable({ calls = {}, order = {}, executions = nil,
                        problems = {} }, History)
end

local function problem(self, text)
  self.problems[#self.problems + 1] = text
end

--- h:invoke(id, kind): a call is about to be made. id: a string (or
-- number) the server's ledger will name it by.
function History:invoke(id, kind)
  id = tostring(id)
  kind = kind or "plain"
  if not KINDS[kind] then
    error("check: kind must be idempotent, keyed or plain, got "
          .. tostring(kind), 2)
  end
  if self.calls[id] then
    problem(self, ("%s: invoked twice"):format(id))
    return
  end
  self.calls[id] = { kind = kind, completions = 0 }
  self.order[#self.order + 1] = id
end

local function outcome(reply, err)
  if err == nil then return "ok" end
  if type(err) == "table" and err.code == "EREPLY" then return "ok" end
  if type(err) == "table" and err.maybe_executed == false then
    return "fail"
  end
  return "info"
end

--- h:complete(id, reply, err): the call returned (reply) or failed (err,
-- a resilnet error or any table with maybe_executed). Returns the outcome.
function History:complete(id, reply, err)
  id = tostring(id)
  local c = self.calls[id]
  if not c then
    problem(self, ("%s: completed but never invoked"):format(id))
    return nil
  end
  c.completions = c.completions + 1
  if c.completions > 1 then
    problem(self, ("%s: completed %d times"):format(id, c.completions))
    return c.outcome
  end
  c.outcome = outcome(reply, err)
  c.error = err
  return c.outcome
end

--- h:ledger(counts): the server's record, id -> times executed. May be
-- called several times (one ledger per server); counts add up.
function History:ledger(counts)
  self.executions = self.executions or {}
  for id, n in pairs(counts) do
    id = tostring(id)
    self.executions[id] = (self.executions[id] or 0) + n
  end
end

--- read_ledger(path, [pattern]) -> id -> count, one id per line (the
-- first capture of pattern, default the whole line). A missing file
-- counts as empty.
function M.read_ledger(path, pattern)
  local counts = {}
  local f = io.open(path)
  if not f then return counts end
  for line in f:lines() do
    local id = pattern and line:match(pattern) or line
    if id and id ~= "" then counts[id] = (counts[id] or 0) + 1 end
  end
  f:close()
  return counts
end

local function judge(c, runs)
  if c.completions == 0 then return "never completed" end
  if c.outcome == "fail" and runs > 0 then
    return ("failed with maybe_executed = false but ran %d time(s)")
      :format(runs)
  end
  if c.kind == "idempotent" then
    if c.outcome == "ok" and runs == 0 then return "ok but never ran" end
    return nil
  end
  if c.outcome == "ok" and runs ~= 1 then
    return ("ok but ran %d times"):format(runs)
  end
  if c.outcome == "info" and runs > 1 then
    return ("ran %d times"):format(runs)
  end
  return nil
end

--- h:verdict() -> { ok = bool, violations = {text...}, counts = {...},
-- summary = text }. Without a ledger, only completions are checked.
function History:verdict()
  local violations, counts = {}, {}
  for _, text in ipairs(self.problems) do violations[#violations + 1] = text end
  local ex = self.executions
  for _, id in ipairs(self.order) do
    local c = self.calls[id]
    local key = c.kind .. " " .. (c.outcome or "none")
    counts[key] = (counts[key] or 0) + 1
    local runs = ex and ex[id] or 0
    local wrong = judge(c, runs)
    if wrong and (ex or wrong == "never completed") then
      violations[#violations + 1] = ("%s (%s): %s"):format(id, c.kind, wrong)
    end
    if ex and runs > 1 and c.kind ~= "idempotent" then
      counts.double = (counts.double or 0) + 1
    end
  end
  if ex then
    local unknown = {}
    for id in pairs(ex) do
      if not self.calls[id] then unknown[#unknown + 1] = id end
    end
    table.sort(unknown)
    for _, id in ipairs(unknown) do
      violations[#violations + 1] = ("%s: in the ledger, never invoked")
        :format(id)
    end
  end
  local lines = { ("%d calls, %d violations"):format(#self.order,
                                                      #violations) }
  local keys = {}
  for k in pairs(counts) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    lines[#lines + 1] = ("  %-18s %d"):format(k, counts[k])
  end
  for i = 1, math.min(#violations, 20) do
    lines[#lines + 1] = "  violation: " .. violations[i]
  end
  if #violations > 20 then
    lines[#lines + 1] = ("  ... and %d more"):format(#violations - 20)
  end
  return { ok = #violations == 0, violations = violations, counts = counts,
           summary = table.concat(lines, "\n") }
end

--- h:assert(): raises with the summary if anything is violated; returns
-- the verdict otherwise.
function History:assert()
  local v = self:verdict()
  if not v.ok then error("history check failed: " .. v.summary, 2) end
  return v
end

return M
