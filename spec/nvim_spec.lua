-- resilnet inside a headless Neovim (issue 21): the LuaJIT build, on
-- Neovim's own loop (vim.loop is luv), calls a real redis-server from
-- plugin-style coroutines while an editor timer keeps firing; a SIGKILL
-- and restart of redis-server in the middle costs no failed call; :qa
-- exits cleanly with the pool still open; a task's error is reported as
-- Neovim reports a vim.loop callback's. Runs in the LuaJIT spec run
-- (Neovim links LuaJIT); skipped with the reason elsewhere.
local R = require "spec.helpers.redis"
local S = require "spec.helpers.host_script"
local H = require "spec.helpers.util"

local function nvim_installed()
  local ok = os.execute("command -v nvim >/dev/null 2>&1")
  return ok == true or ok == 0
end

-- The directory of the resilnet.core this run loaded, as a ?.so pattern.
local function module_cpath()
  local path = package.searchpath and
               package.searchpath("resilnet.core", package.cpath)
  return path and path:gsub("resilnet/core%.so$", "?.so")
end

describe("inside Neovim", function()
  local why
  if not nvim_installed() then
    why = "nvim is not installed (tools/install-deps.sh installs neovim)"
  elseif not jit then
    why = "Neovim loads the LuaJIT build: runs in the LuaJIT spec run"
  elseif not module_cpath() then
    why = "cannot tell where this run's resilnet.core is"
  end
  if why then
    it("needs Neovim and LuaJIT", function() pending(why) end)
    return
  end

  local function run_nvim(script, env)
    local result = os.tmpname()
    local src = H.source_dir()
    local words = { "env",
      "RESILNET_PATH=" .. src .. "lua/?.lua;" .. src .. "lua/?/init.lua",
      "RESILNET_CPATH=" .. module_cpath(), "RESILNET_RESULT=" .. result,
      -- Neovim is not built with ASan and frees nothing at exit.
      "ASAN_OPTIONS=detect_leaks=0" }
    for k, v in pairs(env or {}) do words[#words + 1] = k .. "=" .. v end
    for _, w in ipairs { "nvim", "--headless", "-u", "NONE", "-i", "NONE",
                         "-c", "luafile " .. src .. "spec/hosts/" .. script } do
      words[#words + 1] = w
    end
    local out, status = S.run(words)
    local read, text = pcall(H.read_file, result)
    text = read and text or ""
    os.remove(result)
    return text, status, out
  end

  it("calls redis from coroutines through a restart, timers firing, "
     .. "and quits cleanly", function()
    local port = R.free_port()
    local text, status, out = run_nvim("nvim_redis.lua",
                                       { REDIS_PORT = tostring(port) })
    assert.equals(0, status, "nvim exited with " .. tostring(status) .. ": "
                  .. out .. text)
    local calls, failed, ticks, down_ticks, restarted, slow =
      text:match("^ok (%d+) (%d+) (%d+) (%d+) (%a+) (%d+)")
    assert.truthy(calls, text .. out)
    assert.equals(400, tonumber(calls))
    assert.equals(0, tonumber(failed))
    assert.equals("true", restarted)
    -- Every reply resumed its coroutine inside luv's hook (a fast event).
    assert.equals(0, tonumber(slow))
    assert.is_true(tonumber(ticks) > 0)
    -- The editor's timer fired while redis-server was down and calls
    -- were waiting for it.
    assert.is_true(tonumber(down_ticks) > 0, text)
  end)

  it("examples/neovim/redis.lua sets and gets a key", function()
    local redis = assert(R.start())
    local src = H.source_dir()
    local out, status = S.run { "env", "LUA_PATH=" .. src .. "lua/?.lua;;",
      "LUA_CPATH=" .. module_cpath() .. ";;", "ASAN_OPTIONS=detect_leaks=0",
      "REDIS_ENDPOINT=" .. redis.endpoint,
      "nvim", "--headless", "-u", "NONE", "-i", "NONE",
      -- The GET once the SET has answered; quit after the GET's answer.
      "-c", "lua local shown, notify = 0, vim.notify; vim.notify = "
        .. "function(...) notify(...); shown = shown + 1; vim.cmd(shown == 1 "
        .. "and 'RedisGet greeting' or 'qa') end",
      "-c", "luafile " .. src .. "examples/neovim/redis.lua",
      "-c", "RedisSet greeting hello from nvim" }
    R.stop(redis)
    assert.equals(0, status, out)
    assert.truthy(out:find("redis: OK", 1, true), out)
    assert.truthy(out:find("redis: hello from nvim", 1, true), out)
  end)

  it("reports a task's error as Neovim reports a luv callback's", function()
    local text, status, out = run_nvim("nvim_error.lua")
    assert.equals(0, status, out .. text)
    assert.truthy(text:find("Error executing luv callback:", 1, true),
                  text .. out)
    assert.truthy(text:find("boom from a resilnet task", 1, true), text)
  end)

  it("reports the errors of tasks a read's replies resumed, and the tasks "
     .. "after them still get theirs", function()
    local text, status, out = run_nvim("nvim_reply_errors.lua")
    assert.equals(0, status, out .. text)
    assert.truthy(text:find("Error executing luv callback:", 1, true),
                  text .. out)
    assert.truthy(text:find("boom after reply", 1, true), text)
    assert.truthy(text:find("replies: r1 r2 r3 r4", 1, true), text .. out)
  end)
end)
