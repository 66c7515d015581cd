-- A task resumed by a reply raises on luv's loop (issue 20: the replies of
-- a read are dispatched together, inside one call of luv's hook): reported
-- the way luv reports its own callbacks' errors ("Uncaught Error", and the
-- process exits). A resilnet server and pool on luv's loop. Prints
-- "before" and the reply first, never "after".
local uv = require "luv"
local resilnet = require "resilnet"
local srv = assert(resilnet.server {
  listen = "127.0.0.1:0", protocol = "line",
  handler = function(request) return request end,
})
local host, port = srv:address()
local pool = resilnet.pool { endpoints = { host .. ":" .. port },
                             protocol = "line" }
resilnet.spawn(function()
  print("reply " .. tostring(pool:call("hello")))
  io.stdout:flush()
  error("boom after a reply")
end)
print("before")
io.stdout:flush()
uv.run()
print("after")
