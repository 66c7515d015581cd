-- resilnet.process: exit codes and signals, output to a function or a
-- file, the environment, wait with a timeout (in a task and outside),
-- STOP/CONT seen by the kernel, restart, and no child left behind.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

local function state(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return nil end
  local line = f:read("*l")
  f:close()
  return line:match("%) (%a)")
end

-- Polls the kernel's view (a signal lands asynchronously), bounded.
local function wait_state(pid, pattern)
  local s
  for _ = 1, 500 do
    s = state(pid)
    if s == nil or s:match(pattern) then return s end
    resilnet.sleep(0.01)
  end
  return s
end

local function track(p)
  return H.track(p)
end

describe("resilnet.process", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("reports exit codes and output", function()
    local out, err = {}, {}
    local p = track(assert(resilnet.process {
      "sh", "-c", "echo hello; echo oops >&2; exit 7",
      stdout = function(chunk) out[#out + 1] = chunk end,
      stderr = function(chunk) err[#err + 1] = chunk end,
    }))
    assert.is_true(p:pid() > 0)
    local code, signal = p:wait(10)
    assert.equal(7, code)
    assert.is_nil(signal)
    assert.equal("hello\n", table.concat(out))
    assert.equal("oops\n", table.concat(err))
    assert.is_false(p:running())
    assert.equal(7, (p:wait())) -- known now: no waiting
    local ok, e = p:kill("TERM")
    assert.is_nil(ok)
    assert.equal("ESRCH", e.code)
  end)

  it("writes output to a file and sets the environment", function()
    local path = os.tmpname()
    local p = track(assert(resilnet.process {
      "sh", "-c", 'echo "$RN_SPEC_VAR-$HOME_UNSET"',
      env = { RN_SPEC_VAR = "set", HOME_UNSET = false },
      stdout = path,
    }))
    assert.equal(0, (p:wait(10)))
    local f = assert(io.open(path))
    assert.equal("set-\n", f:read("*a"))
    f:close()
    os.remove(path)
  end)

  it("wait times out, in a task and outside one, leaving no timer", function()
    local p = track(assert(resilnet.process { "sleep", "30" }))
    local t0 = resilnet.now()
    local code, err = p:wait(0.05)
    assert.is_nil(code)
    assert.equal("ETIMEDOUT", err.code)
    assert.is_true(resilnet.now() - t0 >= 0.04)
    H.go(function()
      local c, e = p:wait(0.05)
      assert.is_nil(c)
      assert.equal("ETIMEDOUT", e.code)
      assert.is_true(p:kill("KILL"))
      local c2, sig = p:wait(30)
      assert.equal(137, c2)
      assert.equal("KILL", sig)
    end)
    -- The 30 s wait ended with the exit: nothing keeps the loop alive.
    t0 = resilnet.now()
    resilnet.run()
    assert.is_true(resilnet.now() - t0 < 1)
  end)

  it("STOP and CONT are real signals", function()
    local p = track(assert(resilnet.process { "sleep", "30" }))
    local pid = p:pid()
    assert.equal("S", wait_state(pid, "S"))
    assert.is_true(p:kill("STOP"))
    assert.equal("T", wait_state(pid, "[Tt]"))
    local code, err = p:wait(0.05) -- stopped is not exited
    assert.is_nil(code)
    assert.equal("ETIMEDOUT", err.code)
    assert.is_true(p:kill("SIGCONT"))
    assert.truthy(wait_state(pid, "[SR]"):match("[SR]"))
    assert.is_true(p:kill(15))
    local c, sig = p:wait(10)
    assert.equal(143, c)
    assert.equal("TERM", sig)
  end)

  it("restarts with the same arguments", function()
    local p = track(assert(resilnet.process { "sleep", "30" }))
    local first = p:pid()
    assert.is_true(p:restart())
    assert.is_true(p:running())
    assert.are_not.equal(first, p:pid())
    assert.is_nil(state(first)) -- the first one was killed and reaped
    p:close()
    assert.is_false(p:running())
    assert.equal("KILL", select(2, p:wait()))
  end)

  it("kills a child nobody holds any more", function()
    local pid
    do
      local p = assert(resilnet.process { "sleep", "30" })
      pid = p:pid()
    end
    collectgarbage()
    collectgarbage()
    for _ = 1, 500 do
      if state(pid) == nil then break end
      resilnet.sleep(0.01)
    end
    assert.is_nil(state(pid))
  end)

  it("refuses bad arguments, fails to start what is not there", function()
    assert.has_error(function() resilnet.process {} end,
                     "resilnet.process: no program given")
    assert.has_error(function() resilnet.process { "sleep", bogus = 1 } end,
                     "resilnet.process: unknown option 'bogus'")
    assert.has_error(function()
      resilnet.process { "sleep", stdout = 3 }
    end, "resilnet.process: option 'stdout' must be a function, a path or false")
    local p, err = resilnet.process { "rn-no-such-program-here" }
    assert.is_nil(p)
    assert.equal("ENOENT", err.code)
    local q = track(assert(resilnet.process { "sleep", "30", stdout = false }))
    assert.has_error(function() q:kill("NOPE") end)
    assert.has_error(function() q:wait(-1) end)
  end)
end)
