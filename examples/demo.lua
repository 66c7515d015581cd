-- resilnet demo: a service crashes, restarts and freezes under a steady
-- load, and no call runs twice.
--
-- Two processes of examples/rpc_server.lua (A, and later B) serve a
-- steady stream of calls from this process: idempotent reads, writes with
-- a dedupe key (key = true) and plain writes. Meanwhile A is
--   1. killed with SIGKILL, and restarted half a second later;
--   2. restarted in a planned way: a new process waits for the port, the
--      old one sends GOAWAY, finishes what it accepted and exits;
--   3. frozen with SIGSTOP while B is available, then continued.
-- Every server appends each request's reference to a journal (flushed
-- before it runs it), and keeps dedupe keys in a file they share
-- (examples/dedupe_file.lua), so keys survive the SIGKILL. At the end the
-- journals say what ran how often. Exits non-zero on a double execution of
-- a write, a failed read, or a broken "not executed" promise.
--
--   make demo                      (or: lua5.4 examples/demo.lua [outdir])
-- Output files (journals, timeline data and PNG) go to outdir (build/demo).
local resilnet = require "resilnet"

local now = resilnet.now
local OUT = arg[1] or "build/demo"
local HERE = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/"
local LUA = arg[-1]
for i = -2, -10, -1 do LUA = arg[i] or LUA; if not arg[i] then break end end

local RATE = 450          -- calls a second, a third of each kind
local WORK_MS = 20        -- the servers take 0 to 20 ms a call: some are
                          -- always in flight when a fault strikes
local HEARTBEAT = { interval = 0.1, timeout = 0.5 }
local PLAN = {            -- seconds from the start of the load
  kill = 2, restart_delay = 0.5, goaway = 6, add_b = 9.5, stop = 11,
  cont = 13, finish = 16,
}

local TTY = os.execute("test -t 1") == true or os.execute("test -t 1") == 0
os.execute("mkdir -p '" .. OUT .. "'")
for _, f in ipairs { "A.journal", "B.journal", "dedupe.log", "servers.log",
                     "timeline.dat", "timeline.png" } do
  os.remove(OUT .. "/" .. f)
end

---------------------------------------------------------------------------
-- Server processes

local procs = {}  -- every process started, for cleanup
-- Servers exit when this process is gone, even if it is killed outright.
local stat = io.open("/proc/self/stat")
local MY_PID = stat and stat:read("*n")
if stat then stat:close() end

local function start_server(name, port)
  local out, listening = "", nil
  local p = assert(resilnet.process {
    LUA, HERE .. "rpc_server.lua", "--port=" .. port,
    "--journal=" .. OUT .. "/" .. name .. ".journal",
    "--dedupe=" .. OUT .. "/dedupe.log", "--work=" .. WORK_MS,
    MY_PID and "--parent=" .. MY_PID or nil,
    stdout = function(chunk)
      out = out .. chunk
      listening = listening or tonumber(out:match("listening (%d+)"))
    end,
    stderr = OUT .. "/servers.log",
  })
  procs[#procs + 1] = p
  for _ = 1, 1000 do -- up to 10 s (a restart may wait for the port)
    if listening or not p:running() then break end
    resilnet.sleep(0.01)
  end
  if not listening then
    p:close()
    error("server " .. name .. " did not start; see " .. OUT
          .. "/servers.log", 0)
  end
  return { proc = p, port = listening, name = name, ready_at = now(),
           endpoint = "127.0.0.1:" .. listening }
end

local function cleanup()
  for _, p in ipairs(procs) do
    if p:running() then pcall(p.kill, p, "CONT"); pcall(p.close, p) end
  end
end

---------------------------------------------------------------------------
-- Progress and notes

local T0 -- start of the load
local phase = "steady"
local counts = { calls = 0, ok = 0, failed = 0, waiting = 0 }

local function progress_text()
  return ("  %5.1f s  %-9s calls %5d  ok %5d  failed %3d  in flight %3d")
    :format(now() - T0, phase, counts.calls, counts.ok, counts.failed,
            counts.waiting)
end

local function note(fmt, ...)
  local text = ("  %5.2f s  " .. fmt):format(now() - T0, ...)
  if TTY then io.stdout:write("\r", (" "):rep(78), "\r") end
  io.stdout:write(text, "\n")
  io.stdout:flush()
end

local marks = {}  -- { t, letter, label } for the timeline
local function mark(letter, label, t)
  marks[#marks + 1] = { t = (t or now()) - T0, letter = letter,
                        label = label }
end

---------------------------------------------------------------------------
-- The load: three pools (one per kind, so stats and retry budgets are per
-- kind), calls started at a steady rate whatever the server does.

local KINDS = { "read", "keyed", "plain" }
local LABEL = { read = "idempotent reads", keyed = "keyed writes",
                plain = "unkeyed writes" }
local OPTS = { read = { idempotent = true }, keyed = { key = true },
               plain = nil }

local calls = {}    -- every call: kind, ref, t0, t1, ok, code, maybe
local events = {}   -- pool state events on A: t, state, error, connection
local pools = {}
local A, B

local function watch(pool)
  pool:on("state", function(ev)
    if A and ev.endpoint == A.endpoint then
      events[#events + 1] = { t = now(), state = ev.state, error = ev.error,
                              connection = ev.connection ~= nil }
    end
  end)
end

local function new_pool(endpoints)
  local pool = resilnet.pool {
    endpoints = endpoints, protocol = "rnp", size = 2,
    min_idle = 1,                -- so a recovered endpoint gets calls again
    timeout = 5,                 -- each call's deadline, all attempts
    connect_timeout = 0.5,
    heartbeat = HEARTBEAT,
    reconnect = { initial = 0.02, max = 0.2 },
    eject = { failures = 3, time = 1, max_time = 2 },
    -- The default budget (10 tokens, no retry at or under half) bounds a
    -- retry storm; 20 leaves room for every call one frozen server holds.
    retry = { budget = { tokens = 20 } },
  }
  watch(pool)
  return pool
end

local seq = 0
local function issue()
  seq = seq + 1
  local kind = KINDS[seq % 3 + 1]
  local ref = kind:sub(1, 1) .. seq
  local req = (kind == "read" and "GET c%d #%s" or "ADD c%d 1 #%s")
    :format(seq % 8, ref)
  local rec = { kind = kind, ref = ref, t0 = now() }
  calls[#calls + 1] = rec
  counts.calls, counts.waiting = counts.calls + 1, counts.waiting + 1
  local function done(reply, err)
    rec.t1 = now()
    counts.waiting = counts.waiting - 1
    if reply then
      rec.ok, counts.ok = true, counts.ok + 1
    else
      rec.code, rec.maybe, rec.msg = err.code, err.maybe_executed,
                                     tostring(err)
      counts.failed = counts.failed + 1
    end
  end
  local ok, err = pools[kind]:send(req, OPTS[kind], done)
  if not ok then done(nil, err) end
end

local loading = true
local function load()
  local started = now()
  while loading do
    local due = math.floor((now() - started) * RATE)
    while seq < due do issue() end
    resilnet.sleep(0.005)
  end
end

local function show_progress()
  local last = 0
  while loading do
    resilnet.sleep(0.1)
    if TTY then
      io.stdout:write("\r", progress_text())
      io.stdout:flush()
    elseif now() - last >= 2 then
      last = now()
      print(progress_text())
    end
  end
  if TTY then io.stdout:write("\r", (" "):rep(78), "\r") end
end

local function sleep_until(t)
  local left = T0 + t - now()
  if left > 0 then resilnet.sleep(left) end
end

local function stats_sum(key)
  local n = 0
  for _, kind in ipairs(KINDS) do n = n + pools[kind]:stats()[key] end
  return n
end

---------------------------------------------------------------------------
-- The faults

local T = {} -- when things happened (absolute)

local function scenario()
  -- 1. SIGKILL, then a restart on the same port (the dedupe file keeps
  -- the keys; the journal, the counters).
  sleep_until(PLAN.kill)
  phase = "SIGKILL"
  T.kill = now()
  A.proc:kill("KILL")
  mark("K", "SIGKILL A")
  note("SIGKILL A (pid %d); a new A starts in %.1f s, as a supervisor "
       .. "would", A.proc:pid(), PLAN.restart_delay)
  A.proc:wait(5)
  resilnet.sleep(PLAN.restart_delay)
  A = start_server("A", A.port)
  T.restarted = A.ready_at
  mark("R", "A restarted", T.restarted)
  note("A listens again (pid %d)", A.proc:pid())

  -- 2. A planned restart: the new process waits for the port while the old
  -- one sends GOAWAY and drains.
  sleep_until(PLAN.goaway)
  phase = "GOAWAY"
  local old = A
  local admin = resilnet.pool { endpoints = { old.endpoint },
                                protocol = "rnp", size = 1 }
  T.goaways = stats_sum("goaways")
  T.moved = stats_sum("not_executed") + stats_sum("requeued")
  local next_a
  resilnet.spawn(function() next_a = start_server("A", old.port) end)
  T.drain = now()
  mark("G", "planned restart (GOAWAY)")
  note("planned restart: a new A waits for the port; the old one is asked "
       .. "to DRAIN -> %s", tostring(admin:call("DRAIN 2")))
  admin:close()
  for _ = 1, 1000 do
    if next_a then break end
    resilnet.sleep(0.01)
  end
  assert(next_a, "the new A did not start")
  A = next_a
  note("new A listens (pid %d), %.0f ms after DRAIN; the old one exits "
       .. "when drained", A.proc:pid(), (A.ready_at - T.drain) * 1000)
  local code, err = old.proc:wait(5)
  if code then
    note("old A exited (%s)", code == 0 and "drained" or "code " .. code)
  else
    note("old A did not exit: %s; killing it", tostring(err))
    old.proc:close()
  end

  -- 3. Freeze A while B serves too.
  sleep_until(PLAN.add_b)
  phase = "A+B"
  for _, kind in ipairs(KINDS) do
    pools[kind]:set_endpoints { A.endpoint, B.endpoint }
  end
  note("B (%s) joins the pools", B.endpoint)
  sleep_until(PLAN.stop)
  phase = "SIGSTOP"
  T.stop = now()
  A.proc:kill("STOP")
  mark("S", "SIGSTOP A")
  note("SIGSTOP A: frozen; its kernel still accepts connections")
  sleep_until(PLAN.cont)
  phase = "SIGCONT"
  T.cont = now()
  A.proc:kill("CONT")
  mark("C", "SIGCONT A")
  note("SIGCONT A")
  local frozen = A
  resilnet.spawn(function()
    local code, sig = frozen.proc:wait(PLAN.finish - PLAN.cont)
    if code and loading then
      T.a_exit = sig and "SIG" .. sig or "exit " .. code
      note("A exited after SIGCONT (%s)", T.a_exit)
    end
  end)
  sleep_until(PLAN.finish)
  phase = "draining"
end

---------------------------------------------------------------------------
-- Reading the results

local function read_journals()
  local runs = {}
  for _, name in ipairs { "A", "B" } do
    local f = io.open(OUT .. "/" .. name .. ".journal")
    for line in f and f:lines() or function() end do
      local ref = line:match("^(%S+)")
      runs[ref] = (runs[ref] or 0) + 1
    end
    if f then f:close() end
  end
  return runs
end

local function first(list, pred)
  local best
  for _, x in ipairs(list) do
    if pred(x) and (not best or x.t < best.t) then best = x end
  end
  return best
end

local function ms(t) return t and ("%.0f ms"):format(t * 1000) or "-" end

-- Detection and recovery times, from the calls' and the pools' view.
local function times(add)
  local function call_first(from, to, want_ok)
    local best
    for _, c in ipairs(calls) do
      if c.t1 and c.t1 >= from and c.t1 < to and (c.ok == true) == want_ok
         and (not best or c.t1 < best) then best = c.t1 end
    end
    return best and best - from
  end
  local function worst_latency(from, to)
    local worst = 0
    for _, c in ipairs(calls) do
      if c.t1 and c.t0 < to and c.t1 >= from then
        worst = math.max(worst, c.t1 - c.t0)
      end
    end
    return worst
  end
  local function failed(from, to)
    local n = { read = 0, keyed = 0, plain = 0 }
    for _, c in ipairs(calls) do
      if c.t1 and not c.ok and c.t1 >= from and c.t1 < to then
        n[c.kind] = n[c.kind] + 1
      end
    end
    return ("%d reads, %d keyed, %d unkeyed writes"):format(n.read, n.keyed,
                                                           n.plain)
  end
  local lost = first(events, function(e)
    return e.connection and e.state == "closed" and e.t >= T.kill end)
  add("SIGKILL", "connection loss seen", lost and ms(lost.t - T.kill))
  add("", "first failed call", ms(call_first(T.kill, T.drain, false)))
  add("", "new process listening", ms(T.restarted - T.kill)
      .. (" (%.1f s of it the restart delay)"):format(PLAN.restart_delay))
  add("", "first call answered again", ms(call_first(T.kill, T.drain, true)))
  add("", "slowest call around it", ms(worst_latency(T.kill, T.kill + 1)))
  add("", "failed calls", failed(T.kill, T.drain))
  add("GOAWAY", "GOAWAYs received", ("%d"):format(stats_sum("goaways")
                                                  - T.goaways))
  add("", "attempts moved, not executed", ("%d"):format(
      stats_sum("not_executed") + stats_sum("requeued") - T.moved))
  add("", "failed calls", failed(T.drain, T.stop))
  add("", "slowest call around it", ms(worst_latency(T.drain, T.drain + 2)))
  local dead = first(events, function(e)
    return e.error == "EDEADPEER" and e.t >= T.stop end)
  add("SIGSTOP", "dead-peer verdict", dead and ("%s (heartbeat.timeout "
      .. "%s, from the last byte read)"):format(ms(dead.t - T.stop),
                                                ms(HEARTBEAT.timeout)))
  add("", "first failed call", ms(call_first(T.stop, T.cont, false)))
  add("", "slowest call around it", ms(worst_latency(T.stop, T.stop + 1)))
  add("", "failed calls", failed(T.stop, math.huge))
  local back = first(events, function(e)
    return e.connection and e.state == "ready" and e.t >= T.cont end)
  add("SIGCONT", "A takes calls again", back and ms(back.t - T.cont)
      or T.a_exit and "never: A exited (" .. T.a_exit .. ")")
  return dead and dead.t
end

-- 100 ms buckets of answered and failed calls.
local function timeline(dead_t)
  if dead_t then mark("D", "dead-peer verdict", dead_t) end
  local ok, bad, n = {}, {}, 0
  for _, c in ipairs(calls) do
    if c.t1 then
      local b = math.floor((c.t1 - T0) * 10) + 1
      if c.ok then ok[b] = (ok[b] or 0) + 1 else bad[b] = (bad[b] or 0) + 1 end
      -- The load stops at PLAN.finish; later buckets hold only its
      -- stragglers, unless something failed late.
      if b <= PLAN.finish * 10 or not c.ok then n = math.max(n, b) end
    end
  end
  local f = assert(io.open(OUT .. "/timeline.dat", "w"))
  f:write("# seconds  answered/s  failed/s (100 ms buckets)\n")
  for b = 1, n do
    f:write(("%.1f %d %d\n"):format((b - 1) / 10, (ok[b] or 0) * 10,
                                    (bad[b] or 0) * 10))
  end
  f:close()

  -- The same as text: one column per 100 ms, ten seconds a row.
  local bars = { " ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█" }
  local top = math.ceil(RATE / 10 * 1.5) -- higher: a full bar
  local fault = {}
  for _, m in ipairs(marks) do fault[math.floor(m.t * 10) + 1] = m.letter end
  print("\ntimeline: one column per 100 ms; answered calls (bars), failed "
        .. "calls (digits),")
  print(("faults (K SIGKILL, R restarted, G GOAWAY, S SIGSTOP, D dead-peer "
         .. "verdict, C SIGCONT); a full bar: %d calls/s or more"):format(top * 10))
  for row = 0, math.floor((n - 1) / 100) do
    local a, e, m = {}, {}, {}
    for b = row * 100 + 1, math.min(n, row * 100 + 100) do
      a[#a + 1] = bars[math.min(8, math.floor((ok[b] or 0) / top * 8 + 0.5)) + 1]
      local x = bad[b] or 0
      e[#e + 1] = x == 0 and " " or x < 10 and tostring(x) or "+"
      m[#m + 1] = fault[b] or " "
    end
    print(("%3d s |%s"):format(row * 10, table.concat(a)))
    print("      |" .. table.concat(e))
    print("      |" .. table.concat(m))
  end

  if os.execute("command -v gnuplot >/dev/null 2>&1") ~= true and
     os.execute("command -v gnuplot >/dev/null 2>&1") ~= 0 then
    return nil
  end
  local png = OUT .. "/timeline.png"
  -- Failures stay in the lower third, under the fault labels.
  local top_ok, top_bad = RATE * 1.2, 1
  for b = 1, n do
    top_ok = math.max(top_ok, (ok[b] or 0) * 10 * 1.15)
    top_bad = math.max(top_bad, bad[b] or 0)
  end
  top_ok, top_bad = math.ceil(top_ok), math.max(6, top_bad * 3)
  local g = assert(io.popen("gnuplot 2>>'" .. OUT .. "/servers.log'", "w"))
  g:write(([[
if (strstrt(GPVAL_TERMINALS, "pngcairo") > 0) {
  set terminal pngcairo size 1100,420
} else {
  set terminal png size 1100,420
}
set output '%s'
set title 'resilnet demo: %d calls/s offered; answered and failed calls per 100 ms'
set xlabel 'seconds'
set ylabel 'answered calls/s'
set y2label 'failed calls per 100 ms'
set ytics nomirror
set y2tics
set key below
set yrange [0:%d]
set y2range [0:%d]
set y2tics %d
]]):format(png, RATE, top_ok, top_bad, math.max(1, math.floor(top_bad / 5))))
  for _, m in ipairs(marks) do
    g:write(("set arrow from %.2f, graph 0 to %.2f, graph 1 nohead "
             .. "dashtype 2 lc rgb 'gray40'\n"):format(m.t, m.t))
    g:write(("set label '%s' at %.2f, graph 0.97 rotate by 90 right "
             .. "font ',8'\n"):format(m.label, m.t + 0.05))
  end
  g:write(("plot '%s' using 1:2 with steps lw 2 title 'answered calls/s', "
           .. "'' using 1:($3/10) axes x1y2 with impulses lw 4 lc rgb 'red' "
           .. "title 'failed calls (right axis)'\n")
          :format(OUT .. "/timeline.dat"))
  g:close()
  return png
end

local function report()
  local runs = read_journals()
  local rows, problems = {}, {}
  for _, kind in ipairs(KINDS) do
    local st = pools[kind]:stats()
    rows[kind] = { calls = 0, ok = 0, failed = 0, maybe = 0, ran_failed = 0,
                   twice = 0, retries = st.retries,
                   moved = st.requeued + st.not_executed }
  end
  for _, c in ipairs(calls) do
    local r, n = rows[c.kind], runs[c.ref] or 0
    r.calls = r.calls + 1
    if n > 1 then r.twice = r.twice + 1 end
    if c.ok then
      r.ok = r.ok + 1
      if n == 0 then
        problems[#problems + 1] = c.ref .. " answered but never ran"
      end
    elseif c.t1 then
      r.failed = r.failed + 1
      if c.maybe then r.maybe = r.maybe + 1 end
      if n > 0 then r.ran_failed = r.ran_failed + 1 end
      if not c.maybe and n > 0 then
        problems[#problems + 1] = c.ref .. " failed as not executed but ran: "
          .. c.msg
      end
      if c.kind == "read" then
        problems[#problems + 1] = "a read failed: " .. c.msg
      end
    else
      problems[#problems + 1] = c.ref .. " never completed"
    end
    if n > 1 and c.kind ~= "read" then
      problems[#problems + 1] = c.ref .. " ran " .. n .. " times"
    end
  end

  print(("\n%-17s %6s %6s %8s %6s %7s %7s %6s %6s"):format("", "calls", "ok",
        "retried", "moved", "failed", "maybe", "ran", "twice"))
  for _, kind in ipairs(KINDS) do
    local r = rows[kind]
    print(("%-17s %6d %6d %8d %6d %7d %7d %6d %6d%s"):format(LABEL[kind],
          r.calls, r.ok, r.retries, r.moved, r.failed, r.maybe,
          r.ran_failed, r.twice,
          kind == "read" and r.twice > 0 and "  (idempotent: allowed)" or ""))
  end
  print("  retried: attempts sent again after being sent (idempotent or keyed);"
        .. " moved: attempts\n  that never ran (unsent, or refused by GOAWAY) "
        .. "sent elsewhere; maybe: failed with\n  maybe_executed = true; ran: "
        .. "failed calls the journals show ran anyway (once);\n  twice: calls "
        .. "that ran more than once (the journals of both servers).")
  for _, c in ipairs(calls) do
    if c.t1 and not c.ok and c.kind ~= "read" then
      rows[c.kind].example = rows[c.kind].example or c.msg
    end
  end
  for _, kind in ipairs { "keyed", "plain" } do
    if rows[kind].example then
      print(("  a failed %s: %s"):format(kind == "keyed" and "keyed write"
            or "unkeyed write", rows[kind].example))
    end
  end

  print("\ndetection and recovery")
  local dead_t = times(function(fault, what, value)
    print(("  %-8s %-30s %s"):format(fault, what, value or "-"))
  end)
  local png = timeline(dead_t)
  print(png and ("\ntimeline picture: " .. png) or
        "\n(gnuplot not found: no timeline picture)")
  return problems
end

---------------------------------------------------------------------------

local function main()
  A = start_server("A", 0)
  B = start_server("B", 0)
  print(("resilnet demo: %d calls/s for %d s against an rnp service, one "
         .. "third each idempotent reads,\nkeyed writes and unkeyed writes; "
         .. "servers A %s (pid %d) and B %s (pid %d); files in %s\n")
        :format(RATE, PLAN.finish, A.endpoint, A.proc:pid(), B.endpoint,
                B.proc:pid(), OUT))
  for _, kind in ipairs(KINDS) do pools[kind] = new_pool { A.endpoint } end
  T0 = now()
  resilnet.spawn(load)
  resilnet.spawn(show_progress)
  scenario()
  loading = false
  for _ = 1, 700 do -- the last calls' deadlines (5 s) bound this
    if counts.waiting == 0 then break end
    resilnet.sleep(0.01)
  end
  resilnet.sleep(0.5) -- A may still be running what it read before SIGSTOP
  for _, p in ipairs(procs) do
    if p:running() then p:kill("TERM"); p:wait(2) end
  end
  local problems = report()
  for _, kind in ipairs(KINDS) do pools[kind]:close() end
  return problems
end

local problems
local ok, err = pcall(function()
  resilnet.spawn(function() problems = main() end)
  resilnet.run()
end)
cleanup()
if not ok then
  io.stderr:write("\ndemo failed: ", tostring(err), "\n")
  os.exit(1)
end
if #problems > 0 then
  print("\nFAILED:")
  for i = 1, math.min(#problems, 20) do print("  " .. problems[i]) end
  os.exit(1)
end
print("\nok: no write ran twice, no read failed, and every call reported as "
      .. "not executed did not run")
