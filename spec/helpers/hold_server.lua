-- A RESP server process for the scale spec: { "HOLD", seconds } is
-- answered "held" after that long (it keeps a connection busy, so the
-- client's pool grows), anything else is echoed like echo_server.lua.
-- Room for thousands of connections and requests at once. Prints
-- "listening <port>" once it listens and runs until killed.
-- Usage: hold_server.lua <port>
local resilnet = require "resilnet"

local port = tonumber(arg[1] or "0")
local srv = resilnet.server {
  listen = "127.0.0.1:" .. port,
  protocol = "resp",
  max_concurrent = 4096,
  backlog = 4096,
  handler = function(request)
    if request[1] == "HOLD" then
      resilnet.sleep(tonumber(request[2]) or 0)
      return "held"
    end
    return request[2] or request[1]
  end,
}
local _, bound = srv:address()
io.stdout:write("listening ", bound, "\n")
io.stdout:flush()
resilnet.run()
