-- A server process for the specs: echoes every request (resp: replies with
-- the request's first element), prints "listening <port>" once it listens,
-- and runs until killed. Usage: echo_server.lua <protocol> <port>
local resilnet = require "resilnet"

local protocol, port = arg[1] or "resp", tonumber(arg[2] or "0")
local srv = resilnet.server {
  listen = "127.0.0.1:" .. port,
  protocol = protocol,
  handler = function(request)
    if type(request) == "table" then return request[2] or request[1] end
    return request
  end,
}
local _, bound = srv:address()
io.stdout:write("listening ", bound, "\n")
io.stdout:flush()
resilnet.run()
