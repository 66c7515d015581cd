-- Runs a script of spec/hosts/ (a program that drives resilnet from
-- another event loop: luv, Neovim, cqueues, copas) as its own process,
-- under the interpreter the specs run on, with the specs' module paths.
-- Its own process because the host must be loaded before resilnet, and
-- because what happens at exit (lua_close) is part of what it tests.
local P = require "spec.helpers.process"

local S = {}

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- S.has(module) -> true if the specs' interpreter can require module.
function S.has(module)
  local ok = os.execute(("%s -e %s >/dev/null 2>&1"):format(
    P.LUA, shell_quote("require '" .. module .. "'")))
  return ok == true or ok == 0
end

--- S.missing(module, what) -> true when the specs' interpreter cannot
-- require module; the describe it is called in then gets one pending case
-- saying that `what` (the Debian package) is not installed for this Lua.
function S.missing(module, what)
  if S.has(module) then return false end
  -- busted's functions are globals of spec files only: its module has them
  local busted = require "busted"
  busted.pending("needs " .. module .. " for this Lua: " .. what
                 .. " is not installed for this Lua")
  return true
end

--- S.run(command, ...) -> output (stdout and stderr), exit status. command
-- is a script path (run with the specs' Lua) or, given as a table, a
-- whole command line's words. At most 60 s (timeout(1) kills it).
function S.run(command, ...)
  local words = {}
  if type(command) == "table" then
    for i = 1, #command do words[#words + 1] = shell_quote(command[i]) end
  else
    words = { P.LUA, shell_quote(command) }
  end
  for i = 1, select("#", ...) do
    words[#words + 1] = shell_quote((select(i, ...)))
  end
  local pipe = assert(io.popen("timeout 60 " .. table.concat(words, " ")
                               .. " 2>&1; echo \"exit=$?\""))
  local out = pipe:read("*a")
  pipe:close()
  local status = tonumber(out:match("exit=(%d+)%s*$"))
  return out:gsub("exit=%d+%s*$", ""), status
end

--- S.counts(out, status) -> the three numbers of the host script's
-- "ok <a> <b> <c>" line; fails the case, showing the output, unless the
-- script exited 0 and printed that line.
function S.counts(out, status)
  local assert = require "luassert"
  assert.equals(0, status, out)
  local a, b, c = out:match("ok (%d+) (%d+) (%d+)")
  assert.truthy(a, out)
  return tonumber(a), tonumber(b), tonumber(c)
end

--- S.run_on_redis(script) -> S.counts of script run against a
-- redis-server of its own (its port the argument), stopped afterwards.
function S.run_on_redis(script)
  local R = require "spec.helpers.redis"
  local redis = assert(R.start())
  local out, status = S.run(script, redis.port)
  R.stop(redis)
  return S.counts(out, status)
end

return S
