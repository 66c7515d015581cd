-- A server process that records every execution: for each request
-- {"EXEC", id, delay_ms} it appends id to the ledger file (flushed before
-- anything else happens, so the record survives SIGKILL), waits delay_ms,
-- then replies id. The specs count lines per id to prove what ran.
-- Usage: ledger_server.lua <port> <ledger file>
local resilnet = require "resilnet"

local port, path = tonumber(arg[1] or "0"), assert(arg[2], "ledger path")
local ledger = assert(io.open(path, "a"))

local srv = resilnet.server {
  listen = "127.0.0.1:" .. port,
  protocol = "resp",
  handler = function(request)
    local id, delay = request[2], tonumber(request[3] or "0")
    ledger:write(id, "\n")
    ledger:flush()
    if delay > 0 then resilnet.sleep(delay / 1000) end
    return id
  end,
}
local _, bound = srv:address()
io.stdout:write("listening ", bound, "\n")
io.stdout:flush()
resilnet.run()
