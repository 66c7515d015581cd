-- A resp pool over two real redis-server processes, with failover.
--
-- Starts two redis-servers (no persistence) on free ports, sends calls
-- through one pool spread over both, kills one with SIGKILL halfway, and
-- shows that the calls carry on against the survivor. Exit status 0 when
-- every call succeeded.
--
--   lua5.4 examples/redis_pool.lua      (needs redis-server in PATH)

local resilnet = require "resilnet"

-- A free port: bind port 0, note what the kernel picked, let it go.
local function free_port()
  local probe = assert(resilnet.server{ listen = "127.0.0.1:0",
                                        handler = function() end })
  local _, port = probe:address()
  probe:close()
  return port
end

local function start_redis()
  local port = free_port()
  local p = assert(resilnet.process{
    "redis-server", "--port", port, "--bind", "127.0.0.1",
    "--save", "", "--appendonly", "no", stdout = false,
  })
  -- Ready once it answers: a one-connection pool keeps reconnecting (with
  -- backoff) until the call's deadline.
  local probe = resilnet.pool{ endpoints = { "127.0.0.1:" .. port }, size = 1 }
  assert(probe:call({ "PING" }, { timeout = 5 }) == "PONG",
         "redis-server did not come up on port " .. port)
  probe:close()
  return p, "127.0.0.1:" .. port
end

local redis_a, a = start_redis()
local redis_b, b = start_redis()
print("redis    " .. a .. " and " .. b)

local pool = resilnet.pool{
  endpoints = { a, b },
  protocol = "resp",
  timeout = 2,
  heartbeat = { interval = 0.2, timeout = 1 },
  eject = { failures = 2, time = 5 },
}
pool:on("state", function(ev)
  if not ev.connection then   -- endpoint-level changes only
    print(("state    %s %s %s"):format(ev.endpoint, ev.state,
                                       ev.reason or ""))
  end
end)

-- Which server answered: CONFIG GET port returns { "port", "<n>" }. Asking
-- is harmless to repeat, so the call is idempotent and may fail over.
local killed, done, failed = false, 0, 0
local served = { before = {}, after = {} }
local function ask(n)
  local reply, err = pool:call({ "CONFIG", "GET", "port" },
                               { idempotent = true })
  done = done + 1
  if reply then
    local t = served[killed and "after" or "before"]
    t[reply[2]] = (t[reply[2]] or 0) + 1
  else
    failed = failed + 1
    print(("call %2d  failed: %s"):format(n, tostring(err)))
  end
end

-- Four tasks send 200 calls between them, paced a little; a fifth kills
-- one server while calls are in flight on both.
local CALLS, running = 200, 4
for t = 1, 4 do
  resilnet.spawn(function()
    for i = t, CALLS, 4 do
      ask(i)
      resilnet.sleep(0.002)
    end
    running = running - 1
  end)
end
resilnet.spawn(function()
  while done < CALLS / 2 do resilnet.sleep(0.005) end
  print("kill     " .. a .. " (SIGKILL) after " .. done .. " calls")
  redis_a:kill("KILL")
  killed = true
end)
while running > 0 do resilnet.sleep(0.05) end

for _, phase in ipairs({ "before", "after" }) do
  local parts = {}
  for port, count in pairs(served[phase]) do
    parts[#parts + 1] = ("port %s: %d"):format(port, count)
  end
  table.sort(parts)
  print(("%-8s %s"):format(phase, table.concat(parts, ", ")))
end

local stats = pool:stats()
print(("stats    calls %d, completed %d, failed %d, retries %d, requeued %d")
      :format(stats.calls, stats.completed, stats.failed, stats.retries,
              stats.requeued))
print(failed == 0 and "every call succeeded" or failed .. " calls failed")

pool:close()
redis_a:close()   -- already dead: reaps it
redis_b:close()
os.exit(failed == 0 and 0 or 1)
