-- A Neovim plugin that talks to Redis through resilnet, on the editor's
-- own loop (vim.loop is luv: resilnet.loop() is "luv").
--
--   nvim -c 'luafile examples/neovim/redis.lua'
--   :RedisGet mykey          :RedisSet mykey hello
--
-- Needs the LuaJIT build of resilnet on package.cpath (Neovim links
-- LuaJIT), e.g. LUA_CPATH="build/lua/jit/?.so;;" and LUA_PATH="lua/?.lua;;",
-- and redis-server on 127.0.0.1:6379 (or REDIS_ENDPOINT).
local resilnet = require "resilnet"

local pool = resilnet.pool{
  endpoints = { os.getenv("REDIS_ENDPOINT") or "127.0.0.1:6379" },
  protocol = "resp",
  size = 2,
  timeout = 2,
}

-- Runs fn in a coroutine: resilnet's waiting calls suspend it, never the
-- editor. They run from the loop (a "fast event"), so the result goes
-- back to the editor through vim.schedule.
local function async(fn)
  coroutine.wrap(function()
    local ok, msg, level = pcall(fn)
    if not ok then msg, level = tostring(msg), vim.log.levels.ERROR end
    vim.schedule(function() vim.notify(msg, level) end)
  end)()
end

local function show(reply, err)
  if reply == nil then
    return "redis: " .. tostring(err), vim.log.levels.WARN
  end
  return "redis: " .. (reply == resilnet.null and "(nil)" or tostring(reply))
end

vim.api.nvim_create_user_command("RedisGet", function(cmd)
  -- A read is safe to retry on another connection after a failure.
  async(function()
    return show(pool:call({ "GET", cmd.fargs[1] }, { idempotent = true }))
  end)
end, { nargs = 1 })

vim.api.nvim_create_user_command("RedisSet", function(cmd)
  async(function()
    local value = table.concat(cmd.fargs, " ", 2)
    return show(pool:call({ "SET", cmd.fargs[1], value }))
  end)
end, { nargs = "+" })

-- Close the pool when the editor quits (resilnet would close it at exit
-- anyway; this keeps the last moments tidy).
vim.api.nvim_create_autocmd("VimLeavePre", {
  callback = function() pool:close() end,
})
