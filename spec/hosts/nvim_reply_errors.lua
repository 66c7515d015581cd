-- Replies inside Neovim whose tasks raise (issue 20: the replies of a read
-- are dispatched together, inside one call of luv's hook): each error is
-- reported as Neovim reports a vim.loop callback's, and the tasks after
-- it still get their replies. A resilnet server and pool on Neovim's own
-- loop; four tasks call at once and the second and third raise once they
-- have their reply. Writes v:errmsg and the replies to RESILNET_RESULT.
package.cpath = assert(os.getenv("RESILNET_CPATH")) .. ";" .. package.cpath
package.path = assert(os.getenv("RESILNET_PATH")) .. ";" .. package.path
local resilnet = require "resilnet"
local result_file = assert(os.getenv("RESILNET_RESULT"))
local srv = assert(resilnet.server {
  listen = "127.0.0.1:0", protocol = "line",
  handler = function(request) return request end,
})
local host, port = srv:address()
local pool = resilnet.pool { endpoints = { host .. ":" .. port },
                             protocol = "line", size = 1 }
local replies = {}
for i = 1, 4 do
  resilnet.spawn(function()
    replies[i] = pool:call("r" .. i)
    if i == 2 or i == 3 then error("boom after reply " .. i) end
  end)
end
vim.defer_fn(function()
  local f = assert(io.open(result_file, "w"))
  f:write("errmsg: ", vim.v.errmsg, "\n")
  f:write("replies: ", table.concat(replies, " ", 1, 4), "\n")
  f:close()
  vim.cmd("qa!")
end, 500)
