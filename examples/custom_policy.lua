-- Scripted policy: a retry classifier for Redis' "not now" errors, and
-- event handlers that log state changes and raise alerts.
--
-- A Redis that is loading its dataset answers -LOADING, and a cluster
-- mid-resharding answers -TRYAGAIN: both prove the command did not run, so
-- even a non-idempotent INCR may be sent again. resp pools know these two
-- (retry.not_executed, docs/retry-rules.md section 1a); retry.classify
-- shows here how an application adds its own. Here a small resp server
-- plays such a Redis (the first three commands get -LOADING), and a second
-- endpoint that refuses connections gets ejected. Exit status 0 when the
-- INCR ran exactly once and the alerts fired.
--
--   lua5.4 examples/custom_policy.lua

local resilnet = require "resilnet"

local t0 = resilnet.now()
local function log(fmt, ...)
  print(("%6.3f  " .. fmt):format(resilnet.now() - t0, ...))
end

-- Alerts: in a service these would page someone or bump a metric.
local alerts = {}
local function alert(what)
  alerts[#alerts + 1] = what
  log("ALERT  %s", what)
end

-- The "Redis": -LOADING for the first three commands, then a counter.
local loading, counter = 3, 0
local server = assert(resilnet.server{
  listen = "127.0.0.1:0", protocol = "resp",
  handler = function(cmd)
    if loading > 0 then
      loading = loading - 1
      -- An error object with code EREPLY goes out verbatim, as
      -- "-LOADING ..." (a plain error string would become "-ERR ...").
      return setmetatable({ code = "EREPLY",
                            message = "LOADING Redis is loading the dataset in memory" },
                          resilnet.error_metatable)
    end
    if cmd[1] == "INCR" then counter = counter + 1; return counter end
    return "OK"
  end,
})
local host, port = server:address()

-- A port nobody listens on, for an endpoint that keeps failing.
local probe = assert(resilnet.server{ listen = "127.0.0.1:0",
                                      handler = function() end })
local _, dead_port = probe:address()
probe:close()

-- The policy. classify(err, request) runs for every error reply and
-- before every policy retry: "retry", "fail" or nil (the built-in rules).
local function classify(err, request)
  if err.code == "EREPLY" then
    local word = err.message:match("^(%u+)")
    if word == "LOADING" or word == "TRYAGAIN" then
      log("classify  %s -> retry (%s not run)", word, request[1])
      return "retry"
    end
  end
  return nil
end

local pool = resilnet.pool{
  endpoints = { host .. ":" .. port, "127.0.0.1:" .. dead_port },
  protocol = "resp",
  timeout = 3,
  retry = { attempts = 5, initial = 0.01, max = 0.05, classify = classify,
            budget = { tokens = 6, ratio = 0.5 } },
  eject = { failures = 2, time = 1 },
  reconnect = { initial = 0.05, max = 0.2 },
}

pool:on("state", function(ev)
  if ev.connection then return end   -- endpoints only
  log("state  %s %s (%s)", ev.endpoint, ev.state, ev.reason or "-")
  if ev.state == "transient_failure" then
    alert(ev.endpoint .. " is failing: " .. tostring(ev.error))
  end
end)
pool:on("eject", function(ev)
  alert(("%s ejected for %.1f s"):format(ev.endpoint, ev.duration))
end)
pool:on("retry", function(ev)
  log("retry  attempt %d in %.3f s (%s)", ev.attempt, ev.delay,
      ev.reason or "-")
end)
pool:on("budget", function(ev)
  if ev.state == "exhausted" then
    alert("retry budget exhausted: retries stopped")
  else
    log("budget restored")
  end
end)

-- Not idempotent: retried all the same, since -LOADING proves it did not
-- run (resp's built-in retry.not_executed does so even without classify).
local n, err = pool:call({ "INCR", "visits" })
log("INCR -> %s %s", tostring(n), err and tostring(err) or "")

-- Bursts of calls: with several in flight at once some are placed on the
-- dead endpoint; its connects are refused, those calls move to the live
-- endpoint (they were never sent), and the dead one is ejected.
local answered = 0
for _ = 1, 10 do
  for _ = 1, 10 do
    assert(pool:send({ "PING" }, nil, function(reply, e)
      assert(reply, tostring(e))
      answered = answered + 1
    end))
  end
  resilnet.sleep(0.03)
end
while answered < 100 do resilnet.sleep(0.01) end

local stats = pool:stats()
log("stats  retries %d, ejections %d, budget %.1f", stats.retries,
    stats.ejections, stats.budget)

pool:close()
server:close()

local ok = n == 1 and counter == 1 and #alerts > 0
log("%s: INCR ran %d time(s), %d alert(s)", ok and "ok" or "FAILED",
    counter, #alerts)
os.exit(ok and 0 or 1)
