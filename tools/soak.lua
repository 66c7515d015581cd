-- The soak (issue 6): random faults from the chaos catalogue, one after
-- another for N minutes, against one long-lived rnp ledger server behind
-- one long-lived proxy, driven by the same two long-lived pools (one call
-- at a time, and pipelined bursts). Every few seconds it samples this
-- process's RSS (/proc/self/status VmRSS) and open descriptors
-- (/proc/self/fd), and the server's RSS. It fails if, after the warm-up,
-- any sample exceeds the warm-up's highest by more than the bounds below,
-- if any round's history check fails, or if the descriptors are not back
-- to their starting count once everything is closed. Prints a summary.
--
--   make soak MINUTES=10          (from the repository root)
--   lua5.4 tools/soak.lua <minutes> [seed]
--
-- Bounds (docs/harness.md, "Soak"): RSS growth 16 MiB (client process,
-- which also runs the proxy) and 16 MiB (server), descriptors 32, all over
-- the highest sample of the warm-up (the first 20% of the run, at least
-- 20 s). Override with SOAK_RSS_MIB, SOAK_SERVER_RSS_MIB, SOAK_FDS,
-- SOAK_SAMPLE (seconds between samples, 5). SOAK_FAULTS=a,b picks faults.
local resilnet = require "resilnet"
local E = require "spec.helpers.chaos_engine"
local F = require "spec.helpers.chaos_faults"
local S = require "spec.helpers.chaos_servers"

local MINUTES = tonumber(arg[1] or "") or 10
local SEED = tonumber(arg[2] or "") or os.time()
local SAMPLE = tonumber(os.getenv("SOAK_SAMPLE") or "") or 5
local RSS_BOUND = (tonumber(os.getenv("SOAK_RSS_MIB") or "") or 16) * 1024
local SRV_BOUND = (tonumber(os.getenv("SOAK_SERVER_RSS_MIB") or "") or 16)
                  * 1024
local FD_BOUND = tonumber(os.getenv("SOAK_FDS") or "") or 32
local DURATION = MINUTES * 60
local WARMUP = math.max(20, DURATION * 0.2)
-- The interpreter running us runs the server too.
local LUA = os.getenv("RESILNET_TEST_LUA") or arg[-1] or "lua5.4"

local T0 = resilnet.now()
local function log(fmt, ...)
  io.stdout:write(("[soak %6.1f s] "):format(resilnet.now() - T0)
                  .. fmt:format(...) .. "\n")
  io.stdout:flush()
end

-- kB of VmRSS of a process (nil once it is gone).
local function rss_kb(pid)
  local f = io.open("/proc/" .. pid .. "/status")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)"))
end

local function self_pid()
  local f = assert(io.open("/proc/self/stat"))
  local pid = tonumber(f:read("*l"):match("^(%d+)"))
  f:close()
  return pid
end
local PID = self_pid()

-- Descriptors open in this process. Listed by a child into a file read
-- after it exited (see spec/helpers/util.lua), so that the count does not
-- include a pipe of its own.
local function fd_count()
  local out = os.tmpname()
  os.execute(("ls /proc/%d/fd >%s 2>/dev/null"):format(PID, out))
  local n = 0
  local f = io.open(out)
  if f then
    for _ in f:lines() do n = n + 1 end
    f:close()
  end
  os.remove(out)
  return n
end

-- Settle the loop and the garbage so the first count is a true baseline
-- (libuv's own descriptors exist once a TCP handle was made).
local probe = resilnet.server { listen = "127.0.0.1:0", handler = print }
probe:close()
collectgarbage()
local fds_at_start = fd_count()

local rng = E.rng(SEED)
log("seed %d, %g minutes, sample every %g s, warm-up %g s; bounds: RSS "
    .. "+%d KiB, server RSS +%d KiB, fds +%d", SEED, MINUTES, SAMPLE, WARMUP,
    RSS_BOUND, SRV_BOUND, FD_BOUND)

local srv = S.rnp { lua = LUA }
local px = assert(resilnet.proxy { upstream = srv.endpoint, seed = SEED })
local pools = {
  single = resilnet.pool(E.pool_options("rnp", px:endpoint(), 2)),
  pipelined = resilnet.pool(E.pool_options("rnp", px:endpoint(), 1)),
}

-- Rounds: one fault each. Round k's calls have ids "r<k>-..."; a round is
-- judged one round later, so executions that land late are still its.
local rounds = {}           -- k -> {run, counts, fault}
local current
local function new_round(k, fault)
  local run = E.run { protocol = "rnp", prefix = "r" .. k .. "-", rng = rng,
                      garble = fault.garble,
                      doubles = fault.doubles and fault.doubles.rnp,
                      keyed_as_idempotent = fault.forgets_keys }
  rounds[k] = { run = run, counts = {}, mangled = {}, fault = fault }
  current = run
end

-- Reads the ledger lines added since the last read, each to its round.
local ledger_pos, late = 0, 0
local function read_ledger()
  local f = io.open(srv.ledger)
  if not f then return end
  f:seek("set", ledger_pos)
  local chunk = f:read("*a") or ""
  f:close()
  local last = chunk:match(".*()\n")       -- keep a partial last line
  if not last then return end
  ledger_pos = ledger_pos + last
  for line in chunk:sub(1, last):gmatch("([^\n]*)\n") do
    local k = tonumber(line:match("^r(%d+)%-"))
    local r = k and rounds[k]
    if r and S.well_formed(line) then
      r.counts[line] = (r.counts[line] or 0) + 1
    elseif r then
      r.mangled[#r.mangled + 1] = { text = line, n = 1 }
    else
      -- A round already judged, or bytes too mangled to say whose.
      late = late + 1
    end
  end
end

local totals = { rounds = 0, calls = 0, ok = 0, fail = 0, info = 0,
                 garbled = 0, failed_rounds = 0 }
local by_fault = {}
local failures = {}
local function judge(k)
  local r = rounds[k]
  rounds[k] = nil
  local v = r.run:verdict(r.counts, r.mangled)
  totals.rounds = totals.rounds + 1
  totals.calls = totals.calls + r.run.invoked
  for _, o in ipairs { "ok", "fail", "info" } do
    totals[o] = totals[o] + r.run.outcomes[o]
  end
  totals.garbled = totals.garbled + r.run.garbled
  by_fault[r.fault.name] = (by_fault[r.fault.name] or 0) + 1
  if not v.ok or r.unrecovered then
    totals.failed_rounds = totals.failed_rounds + 1
    local problems = v.problems
    if r.unrecovered then
      problems[#problems + 1] = "no success after lifting: " .. r.unrecovered
    end
    failures[#failures + 1] = ("round %d (%s): %s\n    %s"):format(
      k, r.fault.name, v.summary, table.concat(problems, "\n    "))
    log("round %d (%s) FAILED: %s", k, r.fault.name,
        table.concat(problems, "; "))
  end
end

-- Samples.
local samples = {}
local sampling = true
resilnet.spawn(function()
  while sampling do
    -- A full collection first: what is sampled is what is retained, not
    -- how far behind the incremental collector happens to be.
    collectgarbage()
    collectgarbage()
    local s = { t = resilnet.now() - T0, rss = rss_kb("self"),
                fds = fd_count(), srv = rss_kb(srv.proc:pid()),
                lua = math.floor(collectgarbage("count")),
                calls = totals.calls }
    samples[#samples + 1] = s
    log("rss %d KiB (Lua heap %d KiB), fds %d, server rss %s KiB, "
        .. "%d calls judged", s.rss, s.lua, s.fds, tostring(s.srv), s.calls)
    local t = resilnet.now()
    while sampling and resilnet.now() - t < SAMPLE do resilnet.sleep(0.1) end
  end
end)

local workers = E.start_workers(function() return current end, pools)
local faults = F.for_server("rnp")
-- SOAK_FAULTS=a,b,...: only those (to chase what one fault does).
if os.getenv("SOAK_FAULTS") then
  faults = {}
  for name in os.getenv("SOAK_FAULTS"):gmatch("[^,]+") do
    faults[#faults + 1] = assert(F.by_name[name], "unknown fault " .. name)
  end
end
local k = 0
local deadline = T0 + DURATION
while resilnet.now() < deadline do
  k = k + 1
  local fault = rng:pick(faults)
  local prev = current
  new_round(k, fault)
  -- The last round's calls complete before this fault starts.
  if prev then
    E.wait_until(function() return prev.completed == prev.invoked end, 5)
  end
  E.wait_until(function() return current.outcomes.ok >= 5 end, 5)
  local t = resilnet.now()
  fault.apply { px = px, srv = srv, rng = rng, run = current }
  local left = F.FAULT_TIME - (resilnet.now() - t)
  if left > 0 then resilnet.sleep(left) end
  fault.lift { px = px, srv = srv, rng = rng, run = current }
  current.lifted_at = resilnet.now()
  if not E.wait_until(function()
    return (current:recovered_all(E.MODES))
  end, F.RECOVER_TIME) then
    local _, missing = current:recovered_all(E.MODES)
    rounds[k].unrecovered = table.concat(missing, ", ") .. " ("
      .. F.diagnose(px, srv, pools) .. ")"
  end
  read_ledger()
  if rounds[k - 1] then judge(k - 1) end
end

workers.stop()
E.wait_until(function() return workers.running() == 0 end, 10)
pools.single:close()
pools.pipelined:close()
px:close()
resilnet.sleep(0.05)
read_ledger()
for i = k - 1, k do
  if rounds[i] then judge(i) end
end
sampling = false
resilnet.sleep(0.2)
srv.close()
collectgarbage()
collectgarbage()
resilnet.sleep(0)
local fds_at_end = fd_count()

-- Bounds: every sample after the warm-up against the warm-up's highest.
local warm = { rss = 0, fds = 0, srv = 0 }
local worst = { rss = 0, fds = 0, srv = 0 }
local after = 0
for _, s in ipairs(samples) do
  local into = s.t <= WARMUP and warm or worst
  if s.t > WARMUP then after = after + 1 end
  into.rss = math.max(into.rss, s.rss or 0)
  into.fds = math.max(into.fds, s.fds or 0)
  into.srv = math.max(into.srv, s.srv or 0)
end
local problems = {}
if after == 0 then
  problems[#problems + 1] = "no sample after the warm-up: run longer"
end
local grew = { rss = worst.rss - warm.rss, fds = worst.fds - warm.fds,
               srv = worst.srv - warm.srv }
if grew.rss > RSS_BOUND then
  problems[#problems + 1] = ("RSS grew %d KiB past the warm-up (bound %d)")
    :format(grew.rss, RSS_BOUND)
end
if grew.srv > SRV_BOUND then
  problems[#problems + 1] = ("server RSS grew %d KiB (bound %d)")
    :format(grew.srv, SRV_BOUND)
end
if grew.fds > FD_BOUND then
  problems[#problems + 1] = ("descriptors grew by %d (bound %d)")
    :format(grew.fds, FD_BOUND)
end
if fds_at_end ~= fds_at_start then
  problems[#problems + 1] = ("%d descriptors at the start, %d at the end")
    :format(fds_at_start, fds_at_end)
end
if totals.failed_rounds > 0 then
  problems[#problems + 1] = totals.failed_rounds .. " round(s) failed:\n  "
    .. table.concat(failures, "\n  ")
end

local used = {}
for name, n in pairs(by_fault) do used[#used + 1] = name .. " " .. n end
table.sort(used)
print(("\nsoak summary (seed %d, %.1f min):"):format(SEED,
                                                     (resilnet.now() - T0) / 60))
print(("  %d rounds, %d fault kinds: %s"):format(totals.rounds, #used,
                                                  table.concat(used, ", ")))
print(("  %d calls: %d ok, %d fail (not run), %d info (maybe run), %d "
       .. "garbled; %d ledger lines of judged rounds or unreadable")
      :format(totals.calls, totals.ok, totals.fail, totals.info,
              totals.garbled, late))
print(("  RSS: warm-up max %d KiB, later max %d KiB (%+d, bound +%d)")
      :format(warm.rss, worst.rss, grew.rss, RSS_BOUND))
print(("  server RSS: warm-up max %d KiB, later max %d KiB (%+d, bound +%d)")
      :format(warm.srv, worst.srv, grew.srv, SRV_BOUND))
print(("  fds: warm-up max %d, later max %d (%+d, bound +%d); %d at the "
       .. "start, %d at the end"):format(warm.fds, worst.fds, grew.fds,
                                         FD_BOUND, fds_at_start, fds_at_end))
print(("  %d samples, %d after the warm-up"):format(#samples, after))
if #problems > 0 then
  print("soak FAILED:\n  " .. table.concat(problems, "\n  "))
  os.exit(1)
end
print("soak OK")
os.exit(0)
