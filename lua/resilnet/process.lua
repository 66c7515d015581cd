-- resilnet.process: child processes for test harnesses (docs/harness.md).
-- Returns a constructor: build(core, tasks) -> { new = resilnet.process }.
local opt = require "resilnet.options"

local error, pairs, setmetatable, tostring, type = error, pairs,
      setmetatable, tostring, type
local is_integer, ms = opt.is_integer, opt.ms

return function(core, T)
  local R = {}
  local await = T.await

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
  function R.new(opts)
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

  return R
end
