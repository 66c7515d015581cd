-- A true packet-drop blackhole (issue 6, item 8): packets vanish in the
-- kernel, not in resilnet's own proxy. Two network namespaces made here
-- (rn-bh-<pid>-s for the servers, rn-bh-<pid>-c for the client) joined by
-- a veth pair with private addresses; two rnp servers in one, a pool over
-- both in the other (spec/helpers/blackhole_client.lua, which prints what
-- happened). While calls flow, a DROP rule on each side's INPUT swallows
-- server 1's traffic. Judged here, against the servers' ledgers:
--   - server 1 is declared dead within heartbeat.timeout (+ a tolerance)
--     of the drop, by the heartbeat (EDEADPEER);
--   - the calls server 1 held: idempotent ones succeed on server 2, plain
--     ones fail with maybe_executed = true and are not run again;
--   - every call keeps the retry rules' promises; calls made while the
--     blackhole lasts succeed; connects to server 1 time out (no refusal:
--     the SYNs vanish);
--   - once the rule is lifted, the pool reconnects and server 1 serves.
-- Nothing touches the host's interfaces or rules: the veth pair is made
-- inside the namespaces, and deleting them takes it and the rules away.
-- Skipped, with the reason printed, where namespaces, veth or a packet
-- filter cannot be had (not root, iproute2 or iptables/nft missing, a
-- kernel or container that refuses): CTest reports it as skipped.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local P = require "spec.helpers.process"

local TAG = "[blackhole_netns]"
local LUA = os.getenv("RESILNET_TEST_LUA") or "lua5.4"
local HB_INTERVAL, HB_TIMEOUT = 0.1, 0.5
local TOLERANCE = 0.1   -- seconds past heartbeat.timeout for the verdict
local HOLD = 1.5        -- seconds the blackhole stays after the verdict
local RECOVERY = 5      -- seconds from the lift to a ready connection
-- Private addresses, private namespaces: they cannot clash with the host.
local SERVER_IP, CLIENT_IP = "10.254.7.1", "10.254.7.2"

local function say(...)
  io.stdout:write(TAG, " ", table.concat({ ... }, " "), "\n")
  io.stdout:flush()
end

-- Runs a shell command (ip, iptables: P.external); returns success and its
-- output.
local function sh(cmd)
  local out = os.tmpname()
  local ok = os.execute(("%s >%s 2>&1"):format(
    P.external("sh -c '" .. cmd:gsub("'", "'\\''") .. "'"), out))
  local f = io.open(out)
  local text = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(out)
  return ok == true or ok == 0, (text:gsub("%s+$", ""))
end

local function self_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("*l"):match("^(%d+)"))
  f:close()
  return pid
end

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end

---------------------------------------------------------------------------
-- The namespaces. A run killed by its timeout cannot tear down; the next
-- run removes what such a run left (its servers exit on their own once
-- their parent is gone, see spec/helpers/server.lua's parent=PID).

local function delete_ns(name)
  sh("ip netns pids " .. name .. " | xargs -r kill -9")
  sh("ip netns del " .. name)
end

local function sweep_stale()
  local ok, list = sh("ip netns list")
  if not ok then return end
  for name, pid in list:gmatch("(rn%-bh%-(%d+)%-[sc])") do
    if not alive(tonumber(pid)) then delete_ns(name) end
  end
end

-- Makes both namespaces and the veth pair between them; returns the
-- packet filter that works in them, or nil and why not (a skip).
local function set_up(ns)
  if not sh("test \"$(id -u)\" -eq 0") then
    return nil, "not root: network namespaces, veth and packet filters "
                .. "need CAP_NET_ADMIN and CAP_SYS_ADMIN"
  end
  if not sh("command -v ip") then
    return nil, "ip is not installed (iproute2)"
  end
  sweep_stale()
  for _, name in ipairs { ns.s, ns.c } do
    local ok, out = sh("ip netns add " .. name)
    if not ok then
      return nil, "cannot create network namespaces here (need "
                  .. "CAP_NET_ADMIN): " .. out
    end
  end
  -- The pair is born inside the server's namespace, its peer inside the
  -- client's: never in the host's.
  local steps = {
    ("ip -n %s link add bh0 type veth peer name bh1 netns %s"):format(ns.s, ns.c),
    ("ip -n %s addr add %s/30 dev bh0"):format(ns.s, SERVER_IP),
    ("ip -n %s addr add %s/30 dev bh1"):format(ns.c, CLIENT_IP),
    ("ip -n %s link set lo up"):format(ns.s),
    ("ip -n %s link set lo up"):format(ns.c),
    ("ip -n %s link set bh0 up"):format(ns.s),
    ("ip -n %s link set bh1 up"):format(ns.c),
  }
  for _, cmd in ipairs(steps) do
    local ok, out = sh(cmd)
    if not ok then
      return nil, "cannot set up the veth pair (" .. cmd .. "): " .. out
    end
  end
  -- Whichever filter this kernel accepts: iptables first, then nft
  -- (RESILNET_BLACKHOLE_FILTER=nft tries only that one).
  local probes = {
    iptables = { "iptables -w -A INPUT -p tcp --dport 9 -j DROP",
                 "iptables -w -D INPUT -p tcp --dport 9 -j DROP" },
    nft = { "nft add table inet rn_probe", "nft delete table inet rn_probe" },
  }
  local only = os.getenv("RESILNET_BLACKHOLE_FILTER")
  local why = {}
  for _, filter in ipairs { "iptables", "nft" } do
    if only and only ~= "" and only ~= filter then
      why[#why + 1] = filter .. " not tried (RESILNET_BLACKHOLE_FILTER)"
    elseif not sh("command -v " .. filter) then
      why[#why + 1] = filter .. " not installed"
    else
      local ok, out = sh("ip netns exec " .. ns.s .. " " .. probes[filter][1])
      if ok and sh("ip netns exec " .. ns.s .. " " .. probes[filter][2]) then
        return filter
      end
      why[#why + 1] = filter .. ": " .. out
    end
  end
  return nil, "no packet filter works in a namespace here ("
              .. table.concat(why, "; ") .. ")"
end

---------------------------------------------------------------------------
-- Processes inside the namespaces: `ip netns exec` enters one and execs
-- the command, so the process is the Lua script itself.

local child_env = { LUA_PATH = package.path, LUA_CPATH = package.cpath }

-- The rnp server (spec/helpers/server.lua) with a ledger, listening on
-- the server's side of the pair, and gone by itself once we are.
local function start_server(ns, ledger)
  local srv = P.server {
    via = { "ip", "netns", "exec", ns }, env = child_env, protocol = "rnp",
    listen = SERVER_IP .. ":0", handler = "ledger", ledger = ledger,
    parent = self_pid(),
  }
  return srv.proc, srv.port
end

-- The client's report: marks, calls (id -> record), events, and whether
-- it got to the end.
local function parse(text)
  local r = { marks = {}, calls = {}, events = {}, dupes = {}, lines = {} }
  for line in text:gmatch("[^\n]+") do
    local w = {}
    for word in line:gmatch("%S+") do w[#w + 1] = word end
    if w[1] == "mark" then
      r.marks[w[2]] = tonumber(w[3])
    elseif w[1] == "call" then
      if r.calls[w[2]] then r.dupes[#r.dupes + 1] = w[2] end
      r.calls[w[2]] = { id = w[2], kind = w[3], t0 = tonumber(w[4]),
                        t1 = tonumber(w[5]), outcome = w[6], maybe = w[7] }
    elseif w[1] == "event" then
      r.events[#r.events + 1] = { t = tonumber(w[2]), ep = tonumber(w[3]),
                                  level = w[4], state = w[5], reason = w[6],
                                  error = w[7] }
    elseif w[1] == "done" then
      r.done = true
    end
    if w[1] ~= "call" then r.lines[#r.lines + 1] = line end
  end
  return r
end

---------------------------------------------------------------------------

describe("packet-drop blackhole (iptables in network namespaces)", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("is declared dead by heartbeat; calls keep the retry rules; the pool "
     .. "comes back after the rule is lifted", function()
    local pid = self_pid()
    local ns = { s = ("rn-bh-%d-s"):format(pid), c = ("rn-bh-%d-c"):format(pid) }
    local ledgers = { os.tmpname(), os.tmpname() }
    local procs = {}

    local filter, why = set_up(ns)
    if not filter then
      delete_ns(ns.s)
      delete_ns(ns.c)
      for _, l in ipairs(ledgers) do os.remove(l) end
      say("skipped:", why)
      pending("skipped: " .. why)
      return
    end

    local ok, err = pcall(function()
      local ports = {}
      for i = 1, 2 do procs[i], ports[i] = start_server(ns.s, ledgers[i]) end

      local out = { "" }
      local client = assert(resilnet.process {
        "ip", "netns", "exec", ns.c, LUA, "spec/helpers/blackhole_client.lua",
        filter, ns.s, ns.c, SERVER_IP, ports[1], ports[2],
        ledgers[1], ledgers[2], HB_INTERVAL, HB_TIMEOUT, HOLD,
        env = child_env,
        stdout = function(chunk) out[1] = out[1] .. chunk end,
        stderr = function(chunk) out[1] = out[1] .. chunk end,
      })
      procs[3] = client
      local code = client:wait(90)
      local r = parse(out[1])
      local log = table.concat(r.lines, "\n")
      assert(code == 0 and r.done,
             ("the client did not finish (exit %s):\n%s")
               :format(tostring(code), log))
      assert.same({}, r.dupes, "a call completed more than once")

      local l1, l2 = P.read_ledger(ledgers[1]), P.read_ledger(ledgers[2])
      local m = r.marks
      local function ran(id) return (l1[id] or 0) + (l2[id] or 0) end

      -- The verdict, by the heartbeat, within its timeout of the drop.
      -- Nothing is read once both rules are in place, so the last byte
      -- came before rule_end; a ping goes out after each interval of
      -- silence, so it came no earlier than an interval before rule_start.
      assert(m.dead, "server 1 was never declared dead:\n" .. log)
      local after_end, after_start = m.dead - m.rule_end, m.dead - m.rule_start
      say(("%s: dead peer declared %.3f s after the rule was in place "
           .. "(%.3f s after adding it began; heartbeat interval %.1f s, "
           .. "timeout %.1f s)"):format(filter, after_end, after_start,
                                         HB_INTERVAL, HB_TIMEOUT))
      assert.is_true(after_end <= HB_TIMEOUT + TOLERANCE,
        ("declared dead %.3f s after the drop, over %.1f + %.1f s")
          :format(after_end, HB_TIMEOUT, TOLERANCE))
      assert.is_true(after_start >= HB_TIMEOUT - HB_INTERVAL - 0.05,
        ("declared dead %.3f s after the drop began: too soon for the "
         .. "heartbeat"):format(after_start))

      -- The calls server 1 held when the packets began to vanish.
      local held = { i = 0, p = 0 }
      for id, c in pairs(r.calls) do
        if id:match("^[ip]h%d+$") and l1[id] then
          assert.is_true(c.t1 > m.rule_end, id .. " ended before the drop")
          held[c.kind] = held[c.kind] + 1
          if c.kind == "i" then
            assert.equal("ok", c.outcome, id .. " (idempotent, held by "
                         .. "server 1) failed")
            assert.is_true((l2[id] or 0) >= 1,
                           id .. " succeeded but never ran on server 2")
          else
            assert.equal("EDEADPEER", c.outcome, id .. " (plain, held by "
                         .. "server 1)")
            assert.equal("true", c.maybe, id .. ": maybe_executed")
            assert.is_nil(l2[id], id .. " (plain) ran again on server 2")
          end
        end
      end
      say(("held by server 1 at the drop: %d idempotent calls, each "
           .. "retried and answered by server 2; %d plain calls, each "
           .. "failed EDEADPEER with maybe_executed = true"):format(held.i,
                                                                    held.p))
      assert.is_true(held.i >= 1 and held.p >= 1,
                     "server 1 held no call of each kind at the drop")

      assert(m.lift_start and m.ready and m.serves,
             "server 1 never came back:\n" .. log)

      -- Every call, against the ledgers: the retry rules' promises.
      local n, failed, during, after = 0, 0, 0, 0
      for id, c in pairs(r.calls) do
        n = n + 1
        local times = ran(id)
        if c.outcome == "ok" then
          if c.kind == "p" then
            assert.equal(1, times, id .. " (plain, ok) ran " .. times .. " times")
          else
            assert.is_true(times >= 1, id .. " (idempotent, ok) never ran")
          end
        else
          failed = failed + 1
          assert.equal("p", c.kind, id .. " (idempotent) failed: " .. c.outcome)
          assert.equal("EDEADPEER", c.outcome, id .. " failed")
          assert.is_true(c.t0 < m.dead, id .. " failed, sent after the verdict")
          if c.maybe == "false" then
            assert.equal(0, times, id .. ": maybe_executed = false, yet it ran")
          else
            assert.is_true(times <= 1, id .. " ran " .. times .. " times")
          end
        end
        if c.t0 > m.dead and c.t1 < m.lift_start then
          during = during + 1
          assert.equal("ok", c.outcome, id .. " failed during the blackhole")
        elseif c.t0 > m.ready then
          after = after + 1
          assert.equal("ok", c.outcome, id .. " failed after the recovery")
        end
      end
      for i, l in ipairs { l1, l2 } do
        for id in pairs(l) do
          assert.is_truthy(r.calls[id], ("server %d ran %s, which no call "
                                         .. "sent"):format(i, id))
        end
      end
      assert.is_true(during >= 10, "only " .. during
                     .. " calls during the blackhole")

      -- The SYNs to server 1 vanished: connects timed out, none refused.
      local timeouts, refused = 0, 0
      for _, ev in ipairs(r.events) do
        if ev.ep == 1 and ev.level == "conn" and ev.state == "closed"
           and ev.t > m.dead and ev.t < m.lift_start then
          if ev.error == "ETIMEDOUT" then timeouts = timeouts + 1
          else refused = refused + 1 end
        end
      end
      assert.is_true(timeouts >= 1, "no connect to server 1 timed out")
      assert.equal(0, refused, "a connect to server 1 ended otherwise")

      -- Back after the lift.
      -- From when lifting began: a connect that was waiting may get
      -- through before the second rule is gone.
      local recovery = m.ready - m.lift_start
      say(("%d calls; %d failed (plain, sent to server 1 before the "
           .. "verdict); %d made during the %.1f s the blackhole lasted "
           .. "after it, all answered by server 2; %d connects to server 1 "
           .. "timed out meanwhile; reconnected %.3f s after lifting the rule "
           .. "began, server 1 serving %.3f s after; %d calls after, all "
           .. "ok"):format(n, failed, during, HOLD, timeouts, recovery,
                           m.serves - m.lift_start, after))
      assert.is_true(recovery <= RECOVERY,
        ("reconnected %.3f s after lifting began, over %d s"):format(recovery,
                                                               RECOVERY))
      assert.is_true(after >= 1, "no call after the recovery")
    end)

    for i = #procs, 1, -1 do pcall(procs[i].close, procs[i]) end
    delete_ns(ns.s)
    delete_ns(ns.c)
    for _, l in ipairs(ledgers) do os.remove(l) end
    local _, left = sh("ip netns list")
    assert.is_nil(left:find(ns.s, 1, true), "namespace " .. ns.s .. " left")
    assert.is_nil(left:find(ns.c, 1, true), "namespace " .. ns.c .. " left")
    if not ok then error(err, 0) end
  end)
end)
