-- A Neovim plugin's use of resilnet, run headless by spec/nvim_spec.lua:
--   RESILNET_CPATH=<build/lua/jit/?.so> RESILNET_RESULT=<file> \
--   REDIS_PORT=<free port> nvim --headless -u NONE -c 'luafile nvim_redis.lua'
-- Starts redis-server, and from plugin-style coroutines (coroutine.wrap,
-- not resilnet tasks) calls it through a pooled resilnet pool on Neovim's
-- own loop while a vim.loop timer keeps firing; halfway, redis-server is
-- killed with SIGKILL and started again. Writes "ok <calls> <failed>
-- <ticks> <ticks while down> <restarted> <resumes outside a fast event>"
-- (or "fail <why>") to RESILNET_RESULT, then
-- quits with :qa (with the pool left open) or :cq on failure.
package.cpath = assert(os.getenv("RESILNET_CPATH")) .. ";" .. package.cpath
package.path = assert(os.getenv("RESILNET_PATH")) .. ";" .. package.path
local uv = vim.loop
local resilnet = require "resilnet"
local port = assert(tonumber(os.getenv("REDIS_PORT")))
local result_file = assert(os.getenv("RESILNET_RESULT"))

local function finish(line, ok)
  local f = assert(io.open(result_file, "w"))
  f:write(line, "\n")
  f:close()
  vim.schedule(function() vim.cmd(ok and "qa" or "cq") end)
end

local guard = uv.new_timer()
guard:start(30000, 0, function() finish("fail timed out", false) end)

local ok, err = pcall(function()
  assert(resilnet.loop() == "luv", "resilnet.loop() is " .. resilnet.loop())
  local WORKERS, CALLS = 4, 100
  local redis = assert(resilnet.process{
    "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
    "--appendonly", "no", stdout = false })
  local pool = resilnet.pool{ endpoints = { "127.0.0.1:" .. port },
                              protocol = "resp", size = 4, timeout = 10 }

  -- The editor's own timer.
  local ticks, down_ticks, down = 0, 0, false
  local ticker = uv.new_timer()
  ticker:start(5, 5, function()
    ticks = ticks + 1
    if down then down_ticks = down_ticks + 1 end
  end)

  local done, calls, failed, restarted = 0, 0, 0, false
  local slow_resumes = 0
  local function worker(w)
    for i = 1, CALLS do
      local reply, cerr = pool:call({ "GET", "k" .. w }, { idempotent = true })
      if reply == nil then
        failed = failed + 1
        io.stderr:write("call failed: " .. tostring(cerr) .. "\n")
      end
      calls = calls + 1
      -- Resumed from the loop through luv's hook: a fast event, where
      -- the editor's API needs vim.schedule.
      if not vim.in_fast_event() then slow_resumes = slow_resumes + 1 end
      if w == 1 and i == CALLS / 2 then
        -- Halfway, while the other workers' calls are in flight.
        down = true
        local pid = redis:pid()
        assert(redis:restart{ signal = "KILL" })
        assert(redis:pid() ~= pid, "redis-server was not restarted")
        resilnet.sleep(0.1) -- it is down, or just starting
        down = false
        restarted = true
      end
    end
    done = done + 1
    if done == WORKERS then
      ticker:close()
      redis:close()
      guard:close()
      finish(("ok %d %d %d %d %s %d"):format(calls, failed, ticks,
        down_ticks, tostring(restarted), slow_resumes), true)
    end
  end
  -- Plugin style: a coroutine started from an editor callback.
  vim.schedule(function()
    for w = 1, WORKERS do
      coroutine.wrap(function()
        local wok, werr = pcall(worker, w)
        if not wok then finish("fail " .. tostring(werr), false) end
      end)()
    end
  end)
end)
if not ok then finish("fail " .. tostring(err), false) end
