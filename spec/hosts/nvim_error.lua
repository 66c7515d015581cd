-- A resilnet task that raises inside Neovim: reported as Neovim reports a
-- vim.loop callback's error ("Error executing luv callback"), and the
-- editor carries on. Run by spec/nvim_spec.lua like nvim_redis.lua;
-- writes v:errmsg to RESILNET_RESULT and quits.
package.cpath = assert(os.getenv("RESILNET_CPATH")) .. ";" .. package.cpath
package.path = assert(os.getenv("RESILNET_PATH")) .. ";" .. package.path
local resilnet = require "resilnet"
local result_file = assert(os.getenv("RESILNET_RESULT"))
resilnet.spawn(function()
  resilnet.sleep(0.01)
  error("boom from a resilnet task")
end)
-- Still alive afterwards: a later timer runs and records the message.
vim.defer_fn(function()
  local f = assert(io.open(result_file, "w"))
  f:write("errmsg: ", vim.v.errmsg, "\n")
  f:close()
  vim.cmd("qa!")
end, 300)
