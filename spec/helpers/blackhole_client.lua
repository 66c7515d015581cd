-- The client side of spec/blackhole_netns_spec.lua, run inside the
-- client's network namespace (`ip netns exec`): one rnp pool over two
-- servers that live in another namespace behind a veth pair. While calls
-- flow, it makes packets to and from server 1 vanish (a DROP rule on each
-- side's INPUT, so neither sender sees a local error: a true blackhole),
-- keeps it so for a while after the pool's verdict, lifts it, and waits
-- for the pool to use server 1 again.
--
-- It judges nothing: it prints what happened, one fact a line, and the
-- spec judges (with the servers' ledgers):
--   mark <name> <t>                        a moment of the scenario
--   call <id> <i|p> <t0> <t1> <ok|CODE> <maybe_executed|->
--   event <t> <endpoint 1|2> <conn|ep> <state> <reason> <error>
--   done                                   last line of a complete run
-- Times are seconds since the client started. Ids: "i..." idempotent,
-- "p..." plain (neither idempotent nor keyed).
--
-- Usage: blackhole_client.lua <iptables|nft> <server ns> <client ns>
--          <server host> <port 1> <port 2> <ledger 1> <ledger 2>
--          <heartbeat interval> <heartbeat timeout> <hold seconds>
local resilnet = require "resilnet"
local wait = require "spec.helpers.wait"
local P = require "spec.helpers.process"

local filter, ns_server, ns_client, host = arg[1], arg[2], arg[3], arg[4]
local port1, port2 = assert(tonumber(arg[5])), assert(tonumber(arg[6]))
local ledger1, ledger2 = arg[7], arg[8]
local hb_interval, hb_timeout = tonumber(arg[9]), tonumber(arg[10])
local hold = tonumber(arg[11])
local ep1, ep2 = host .. ":" .. port1, host .. ":" .. port2

local origin = resilnet.now()
local function t() return resilnet.now() - origin end
local function say(...)
  io.stdout:write(table.concat({ ... }, " "), "\n")
  io.stdout:flush()
end
local function mark(name) say("mark", name, ("%.4f"):format(t())) end

-- Polls every 5 ms: the marks it precedes are read to that precision.
local function wait_for(cond, seconds, what)
  return wait(cond, seconds, what, 0.005)
end

---------------------------------------------------------------------------
-- The rules. Each namespace drops, on INPUT, the packets of server 1's
-- connections that arrive in it: the client's never reach the server and
-- the server's never reach the client, while both stacks send as usual
-- (an OUTPUT drop would fail the sender's own writes with EPERM, a local
-- signal no real blackhole gives).

local TABLE = "rn_blackhole"
local rules = {
  { ns = ns_server,
    iptables = { "INPUT", "-p", "tcp", "--dport", port1, "-j", "DROP" },
    nft = ("tcp dport %d drop"):format(port1) },
  { ns = ns_client,
    iptables = { "INPUT", "-p", "tcp", "-s", host, "--sport", port1,
                 "-j", "DROP" },
    nft = ("ip saddr %s tcp sport %d drop"):format(host, port1) },
}

local function command(rule, add)
  local argv = { "ip", "netns", "exec", rule.ns }
  if filter == "iptables" then
    argv[#argv + 1] = "iptables"
    argv[#argv + 1] = "-w"
    argv[#argv + 1] = add and "-A" or "-D"
    for _, a in ipairs(rule.iptables) do argv[#argv + 1] = a end
  elseif add then
    argv[#argv + 1] = "nft"
    argv[#argv + 1] = ("add table inet %s ; add chain inet %s input "
      .. "{ type filter hook input priority 0 ; } ; add rule inet %s input %s")
      :format(TABLE, TABLE, TABLE, rule.nft)
  else
    argv[#argv + 1] = "nft"
    argv[#argv + 1] = "delete table inet " .. TABLE
  end
  return argv
end

-- Runs one rule command to its end (the loop, and every call, goes on).
local function run(argv)
  local out = {}
  local function keep(chunk) out[#out + 1] = chunk end
  P.external(argv)
  argv.stdout, argv.stderr = keep, keep
  local p = assert(resilnet.process(argv))
  local code, err = p:wait(10)
  p:close()
  if code ~= 0 then
    error(("%s: %s %s"):format(table.concat(argv, " "),
                               code and "exit " .. code or tostring(err),
                               table.concat(out)), 2)
  end
end

local function set_rules(add)
  for _, rule in ipairs(rules) do run(command(rule, add)) end
end

-- Ledgers: which ids each server ran (id -> times).
local executed = require("spec.helpers.process").read_ledger

---------------------------------------------------------------------------

local pool = resilnet.pool {
  endpoints = { ep1, ep2 }, protocol = "rnp",
  size = 1,                       -- one connection per server: one verdict
  connect_timeout = 0.5, timeout = 8,
  heartbeat = { interval = hb_interval, timeout = hb_timeout },
  reconnect = { initial = 0.1, max = 0.5 },
  -- Every idempotent call cut off may be retried: the budget is not what
  -- is tested here.
  retry = { attempts = 3, budget = { tokens = 100 } },
  -- A blackhole longer than a few connect timeouts ejects server 1; a
  -- short ejection keeps the recovery this run measures short.
  eject = { failures = 5, time = 1 },
}

local which = { [ep1] = 1, [ep2] = 2 }
pool:on("state", function(ev)
  local n = which[ev.endpoint]
  if not n then return end
  say("event", ("%.4f"):format(t()), n, ev.connection and "conn" or "ep",
      ev.state, ev.reason or "-", ev.error or "-")
end)

-- One "call" line: how the call that started at started ended.
local function report(id, kind, started, reply, e)
  local outcome, maybe = "ok", "-"
  if reply ~= id then
    outcome = e and e.code or "EBADREPLY"
    maybe = tostring(e and e.maybe_executed)
  end
  say("call", id, kind, ("%.4f"):format(started), ("%.4f"):format(t()),
      outcome, maybe)
end

local outstanding = 0
local function send(id, kind, delay_ms)
  local started = t()
  outstanding = outstanding + 1
  local ok, err = pool:send(id .. " " .. delay_ms, { idempotent = kind == "i" },
    function(reply, e)
      outstanding = outstanding - 1
      report(id, kind, started, reply, e)
    end)
  if not ok then
    outstanding = outstanding - 1
    report(id, kind, started, nil, err)
  end
end

-- Two streams, one call at a time each, from the warm-up to the end: the
-- calls that flow while the blackhole falls, lasts and lifts.
local streaming = true
local function stream(kind)
  local n = 0
  while streaming do
    n = n + 1
    local id = kind .. "s" .. n
    local started = t()
    local reply, err = pool:call(id .. " 0", { idempotent = kind == "i" })
    report(id, kind, started, reply, err)
    resilnet.sleep(0.01)
  end
end

local function main()
  local streams = 0
  for _, kind in ipairs { "i", "p" } do
    resilnet.spawn(function()
      streams = streams + 1
      stream(kind)
      streams = streams - 1
    end)
  end

  -- Warm-up: both servers have served a call.
  wait_for(function()
    return next(executed(ledger1)) and next(executed(ledger2))
  end, 5, "both servers did not serve")
  mark("warm")

  -- Calls the server holds for 2 s, in pairs of one kind (the pool puts
  -- calls on the less busy server, so a pair lands on both), until
  -- server 1 holds two of each kind: in flight when the rule comes.
  local on1 = { i = 0, p = 0 }
  local n = 0
  while (on1.i < 2 or on1.p < 2) and n < 24 do
    local kind = (n % 4 < 2) and "i" or "p"
    n = n + 1
    local id = kind .. "h" .. n
    send(id, kind, 2000)
    wait_for(function()
      local a, b = executed(ledger1), executed(ledger2)
      if a[id] then on1[kind] = on1[kind] + 1 end
      return a[id] or b[id]
    end, 2, "held call " .. id .. " did not reach a server")
  end
  mark("held")

  -- The verdict: server 1's connection closed for silence.
  local dead = false
  pool:on("state", function(ev)
    if ev.endpoint == ep1 and ev.connection and ev.state == "closed"
       and ev.error == "EDEADPEER" and not dead then
      dead = true
      mark("dead")
    end
  end)
  mark("rule_start")
  set_rules(true)
  mark("rule_end")
  wait_for(function() return dead end, hb_timeout + 5,
           "server 1 was not declared dead")

  -- The blackhole stays: reconnects to server 1 go unanswered while
  -- every call moves to server 2.
  resilnet.sleep(hold)

  -- Back: a connection to server 1 is ready (which may be before the
  -- second rule is gone, if a connect was waiting) and a call ran there.
  local seen = executed(ledger1)
  local ready = false
  pool:on("state", function(ev)
    if ev.endpoint == ep1 and ev.connection and ev.state == "ready"
       and not ready then
      ready = true
      mark("ready")
    end
  end)
  mark("lift_start")
  set_rules(false)
  mark("lift_end")
  wait_for(function() return ready end, 10,
           "no connection to server 1 after the rule was lifted")
  wait_for(function()
    for id in pairs(executed(ledger1)) do
      if not seen[id] then return true end
    end
  end, 5, "server 1 got no call after it was back")
  mark("serves")

  -- A last stretch of calls with server 1 back, then stop and drain.
  resilnet.sleep(0.5)
  streaming = false
  wait_for(function() return streams == 0 and outstanding == 0 end, 10,
           "calls still outstanding at the end")
  mark("end")
  pool:close()
end

local ok, err = pcall(function()
  local finished = false
  resilnet.spawn(function()
    main()
    finished = true
  end)
  -- Everything above is bounded; this bounds the whole.
  local deadline = resilnet.now() + 60
  while not finished do
    if resilnet.now() > deadline then error("the scenario took over 60 s") end
    resilnet.sleep(0.01)
  end
end)
if not ok then
  -- The spec deletes the namespaces, and the rules with them.
  say("error", (tostring(err):gsub("\n", " | ")))
  os.exit(1)
end
say("done")
