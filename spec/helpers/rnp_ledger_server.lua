-- An rnp server process that records every execution. A request
-- "<id> <delay_ms>" appends id to the ledger file (flushed first, so the
-- record survives SIGKILL), waits delay_ms, then replies id. The request
-- "DRAIN" starts a planned shutdown: GOAWAY to every client, in-flight
-- requests finish, then the process exits.
-- Usage: rnp_ledger_server.lua <port> <ledger file> [dedupe: "on"|"off"]
--                              [redis endpoint: keys kept there]
local resilnet = require "resilnet"

local port, path = tonumber(arg[1] or "0"), assert(arg[2], "ledger path")
local dedupe = arg[3] ~= "off" and { window = 60, capacity = 100000 } or false
if dedupe and arg[4] then
  -- Keys in Redis outlive this process: a restarted server replays them.
  local redis = resilnet.pool { endpoints = { arg[4] }, protocol = "resp" }
  dedupe.store = require("resilnet.dedupe_redis").new(redis)
end
local ledger = assert(io.open(path, "a"))
local srv

local function handler(request)
  if request == "DRAIN" then
    resilnet.spawn(function() srv:close { goaway = true, drain = 5 } end)
    return "draining"
  end
  local id, delay = request:match("^(%S+) (%d+)$")
  assert(id, "bad request")
  ledger:write(id, "\n")
  ledger:flush()
  delay = tonumber(delay)
  if delay > 0 then resilnet.sleep(delay / 1000) end
  return id
end

-- A planned restart starts the next process while the last one may still
-- hold the port for a moment: try to bind for up to 5 s.
local err
for _ = 1, 250 do
  srv, err = resilnet.server { listen = "127.0.0.1:" .. port, protocol = "rnp",
                               dedupe = dedupe, handler = handler }
  if srv or port == 0 then break end
  resilnet.sleep(0.02)
end
assert(srv, err)
local _, bound = srv:address()
io.stdout:write("listening ", bound, "\n")
io.stdout:flush()
resilnet.run()
