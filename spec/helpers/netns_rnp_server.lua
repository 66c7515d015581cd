-- The rnp server of the packet-drop blackhole spec, run inside a network
-- namespace of its own (`ip netns exec`), where loopback is of no use: it
-- listens on the address it is given. Requests are those of
-- rnp_ledger_server.lua: "<id> <delay_ms>" appends id to the ledger file
-- (flushed before waiting, so a call the blackhole cut off is still on
-- record), waits delay_ms, then replies id.
--
-- A test killed by its timeout (SIGKILL) cannot tear down what it made:
-- this process then exits by itself, once its parent is gone.
-- Usage: netns_rnp_server.lua <host:port> <ledger file> <parent pid>
local resilnet = require "resilnet"

local listen = assert(arg[1], "listen address")
local ledger = assert(io.open(assert(arg[2], "ledger path"), "a"))
local parent = assert(tonumber(arg[3]), "parent pid")

local function handler(request)
  local id, delay = request:match("^(%S+) (%d+)$")
  assert(id, "bad request")
  ledger:write(id, "\n")
  ledger:flush()
  delay = tonumber(delay)
  if delay > 0 then resilnet.sleep(delay / 1000) end
  return id
end

local srv = assert(resilnet.server { listen = listen, protocol = "rnp",
                                     handler = handler })
local _, port = srv:address()
io.stdout:write("listening ", port, "\n")
io.stdout:flush()

-- Our parent's pid, from /proc/self/stat: the field after the state, which
-- follows the name in parentheses (a name may hold spaces). A parent that
-- exits hands us to another process at once, even while it is a zombie.
local function parent_pid()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("*l")
  f:close()
  return tonumber(stat:match("%)%s+%S+%s+(%d+)"))
end

resilnet.spawn(function()
  while parent_pid() == parent do resilnet.sleep(0.2) end
  os.exit(0)
end)
resilnet.run()
