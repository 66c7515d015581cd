-- A chaos harness for your own service, in one page: start the service as
-- a child process, put a fault-injecting proxy in front of it, drive calls
-- through a pool while faults come and go, then hold what the client saw
-- against what the server says it ran.
--
--   lua5.4 examples/chaos_harness.lua [seed]     (from the repository root)
--
-- Exit status 0: no call was lost, completed twice or ran more often than
-- the rules allow. Copy it, replace SERVICE with your server's command, and
-- make your server write one line per execution ("<id>") to LEDGER: the
-- demo service at the bottom of this file shows the whole contract.
local resilnet = require "resilnet"

-- Run as the demo service: `chaos_harness.lua serve <port> <ledger>`.
if arg[1] == "serve" then
  local ledger = assert(io.open(arg[3], "a"))
  local srv = assert(resilnet.server {
    listen = "127.0.0.1:" .. arg[2], protocol = "rnp",
    handler = function(request)
      ledger:write(request, "\n")  -- record the execution before replying
      ledger:flush()
      return request
    end })
  print("ready")
  io.stdout:flush()
  resilnet.run()
  return
end

local SEED = tonumber(arg[1]) or os.time()
-- A free port (bound, noted, let go): a restarted service comes back there.
local probe = resilnet.server { listen = "127.0.0.1:0", handler = print }
local _, PORT = probe:address()
probe:close()
local LEDGER = os.tmpname()
local LUA = os.getenv("RESILNET_TEST_LUA") or "lua5.4"
local SERVICE = { LUA, arg[0], "serve", PORT, LEDGER }
print("seed " .. SEED .. " (rerun with: " .. arg[0] .. " " .. SEED .. ")")

-- 1. The service, as a child process we can kill and restart.
local ready = false
SERVICE.stdout = function(out) ready = ready or out:find("ready") ~= nil end
local service = assert(resilnet.process(SERVICE))
local function wait_ready()
  for _ = 1, 500 do
    if ready then return end
    resilnet.sleep(0.01)
  end
  error("the service did not start")
end
wait_ready()

-- 2. A proxy in front of it, and a pool that goes through the proxy.
local proxy = assert(resilnet.proxy { upstream = "127.0.0.1:" .. PORT,
                                      seed = SEED })
local pool = resilnet.pool {
  endpoints = { proxy:endpoint() }, protocol = "rnp",
  timeout = 1, heartbeat = { interval = 0.1, timeout = 0.3 },
  reconnect = { initial = 0.01, max = 0.1 },
}

-- 3. A workload: four tasks calling until told to stop; every call is
--    recorded in a history (invoke, then its outcome).
local history = resilnet.check.history()
local stop, running, n = false, 0, 0
for t = 1, 4 do
  resilnet.spawn(function()
    running = running + 1
    for _ = 1, 10000 do
      if stop then break end
      n = n + 1
      local id = "call-" .. n
      local idempotent = t == 1              -- task 1 makes idempotent calls
      history:invoke(id, idempotent and "idempotent" or "plain")
      local reply, err = pool:call(id, { idempotent = idempotent })
      history:complete(id, reply, err)
      resilnet.sleep(err and 0.01 or 0.002)
    end
    running = running - 1
  end)
end

-- 4. Faults, one after another, each for half a second.
local faults = {
  { kind = "latency", direction = "down", ms = 30, jitter = 10 },
  { kind = "reset", direction = "up", after_bytes = 200 },
  { kind = "close", direction = "down", after_bytes = 300 },
  { kind = "blackhole", direction = "up" },
}
resilnet.sleep(0.3)
for _, fault in ipairs(faults) do
  print("fault: " .. fault.kind .. " " .. fault.direction)
  proxy:fault(fault)
  resilnet.sleep(0.5)
  proxy:clear()
  proxy:reset_all()       -- start the next fault on fresh connections
  resilnet.sleep(0.2)
end
print("fault: SIGKILL and restart of the service")
ready = false
assert(service:restart { signal = "KILL" })
wait_ready()
resilnet.sleep(0.5)

-- 5. Stop, close, and check the history against the service's ledger.
stop = true
for _ = 1, 500 do
  if running == 0 then break end
  resilnet.sleep(0.01)
end
pool:close()
proxy:close()
service:close()
history:ledger(resilnet.check.read_ledger(LEDGER))
os.remove(LEDGER)
local verdict = history:verdict()
print(verdict.summary)
print(verdict.ok and "verdict: OK" or "verdict: VIOLATIONS (seed " .. SEED .. ")")
-- true: close the Lua state first, so everything the module holds is
-- released (LuaJIT's heap is invisible to leak checkers otherwise).
os.exit(verdict.ok and 0 or 1, true)
