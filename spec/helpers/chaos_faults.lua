-- The chaos suite's fault catalogue and the runner of one case.
--
-- A fault is { name, apply(ctx), lift(ctx), garble, doubles, forgets_keys,
-- servers, tls_only, judge } (the flags: see E.run in chaos_engine.lua;
-- tls_only: a fault of the TLS cases only): apply starts it (ctx.px the
-- proxy, ctx.srv the server, ctx.rng the case's generator; apply may wait,
-- the workload runs meanwhile), lift ends it. Parameters are drawn from
-- the case's seed, so a seed replays the same faults with the same
-- parameters (kernel timing aside). judge(ctx),
-- when present, says what the fault must have done to the pools besides
-- the verdict (a list of problems; ctx.tls, ctx.pools, ctx.closed: the
-- pools' closed connections by error code).
--
-- Over TLS (ctx.tls; the proxy still works on TCP bytes, so it attacks
-- TLS records) every record is authenticated: a byte altered on the wire
-- ends its connection with ETLS instead of reaching a codec, so faults
-- that garble are judged strictly there (no excuses for wrong replies,
-- mangled executions or forgotten keys; see run_case).
local resilnet = require "resilnet"
local E = require "spec.helpers.chaos_engine"
local S = require "spec.helpers.chaos_servers"

local F = {}

-- How long a fault stays on (seconds); process faults take what they take.
F.FAULT_TIME = 0.6
-- After lifting: every (mode, kind) must succeed again within this.
F.RECOVER_TIME = 5

local function proxy_fault(name, spec_of, extra)
  local f = extra or {}
  f.name = name
  f.apply = function(ctx)
    ctx.f = ctx.px:fault(spec_of(ctx.rng))
  end
  f.lift = f.lift or function(ctx) ctx.px:clear() end
  return f
end

-- Faults that drop bytes out of the middle of a stream then let later
-- bytes through are not something TCP can do: a path that drops bytes
-- either recovers them or dies. Lifting one ends its connections too.
local function lift_and_reset(ctx)
  ctx.px:clear()
  ctx.px:reset_all()
end

-- A listener fault bites on new connections: reset the live ones too, so
-- that the pools must connect through it.
local function listener_fault(name, spec_of)
  return {
    name = name,
    apply = function(ctx)
      ctx.f = ctx.px:fault(spec_of(ctx.rng))
      ctx.px:reset_all()
    end,
    lift = function(ctx) ctx.px:clear() end,
  }
end

local function dir(d) return function(spec) spec.direction = d; return spec end end
local up, down = dir("up"), dir("down")

---------------------------------------------------------------------------
-- Judges.

local function sum_stats(ctx, get)
  local n = 0
  for _, pool in pairs(ctx.pools) do n = n + get(pool:stats()) end
  return n
end

local function unexpected(st) return st.evictions.unexpected end

local function ready_endpoints(st)
  local n = 0
  for _, ep in ipairs(st.endpoints) do
    if ep.state == "ready" then n = n + 1 end
  end
  return n
end

-- No codec saw a byte TLS did not vouch for: nothing closed for a bad
-- frame or an unexpected reply.
local function codecs_untouched(ctx, problems)
  local n = sum_stats(ctx, unexpected)
  if n > 0 then
    problems[#problems + 1] = ("%d connection(s) closed for a bad or "
      .. "unexpected frame: altered bytes reached a codec"):format(n)
  end
end

-- A corrupted TLS record fails its own connection, with ETLS, and no
-- other: as many ETLS closes as connections the proxy corrupted at most,
-- at least one when it corrupted what the client reads. Over plaintext
-- the verdict's garbling rules say it all.
local function judge_corrupt(ctx)
  local problems = {}
  if not ctx.tls then return problems end
  local conns, n = {}, 0
  for _, ev in ipairs(ctx.px:events()) do
    if ev.type == "corrupt" and not conns[ev.conn] then
      conns[ev.conn] = true
      n = n + 1
    end
  end
  local etls = ctx.closed.ETLS or 0
  if etls > n then
    problems[#problems + 1] = ("%d connection(s) closed with ETLS, but "
      .. "only %d were corrupted"):format(etls, n)
  end
  if ctx.direction == "down" and n > 0 and etls == 0 then
    problems[#problems + 1] = ("%d connection(s) corrupted toward the "
      .. "client, none closed with ETLS"):format(n)
  end
  codecs_untouched(ctx, problems)
  return problems
end

-- Records cut into pieces of a few bytes are put together again.
local function judge_slice(ctx)
  local problems = {}
  if not ctx.tls then return problems end
  if (ctx.closed.ETLS or 0) > 0 then
    problems[#problems + 1] = ("%d connection(s) closed with ETLS under "
      .. "slicing"):format(ctx.closed.ETLS)
  end
  codecs_untouched(ctx, problems)
  return problems
end

-- A silent path is found by the heartbeat (the pools' 0.3 s timeout, well
-- inside the fault's 0.6 s), TLS or not.
local function judge_blackhole(ctx)
  local n = sum_stats(ctx, function(st) return st.dead_peers end)
  if n == 0 then
    return { "no connection was declared dead by the heartbeat" }
  end
  return {}
end

-- Every connect is reset inside its TLS handshake while the fault lasts:
-- a call made meanwhile can never be sent, so none may succeed before
-- the lift or end as "maybe executed", and connects did fail.
local function judge_handshake_reset(ctx)
  local problems = {}
  local d = ctx.run.during
  if (d["ok during"] or 0) > 0 then
    problems[#problems + 1] = ("%d call(s) made during the fault "
      .. "succeeded before it was lifted: a handshake got through")
      :format(d["ok during"])
  end
  local maybe = (d["info during"] or 0) + (d["info after"] or 0)
  if maybe > 0 then
    problems[#problems + 1] = ("%d call(s) made during the fault ended as "
      .. "maybe executed: they were sent"):format(maybe)
  end
  local failed = sum_stats(ctx, function(st) return st.connect_failures end)
    - ctx.connect_failures_before
  if failed == 0 then
    problems[#problems + 1] = "no connect failed during the fault"
  end
  return problems
end

F.list = {
  proxy_fault("latency-up", function(r)
    return up { kind = "latency", ms = r:int(5, 40), jitter = r:int(0, 10) }
  end),
  proxy_fault("latency-down", function(r)
    return down { kind = "latency", ms = r:int(5, 40), jitter = r:int(0, 10) }
  end),
  proxy_fault("jitter-normal", function(r)
    return { kind = "latency", ms = r:int(5, 15), jitter = r:int(5, 15),
             distribution = "normal" }
  end),
  proxy_fault("bandwidth-up", function(r)
    return up { kind = "bandwidth", kbps = r:int(50, 400) }
  end),
  proxy_fault("bandwidth-down", function(r)
    return down { kind = "bandwidth", kbps = r:int(50, 400) }
  end),
  proxy_fault("slice-up", function(r)
    return up { kind = "slice", bytes = r:int(1, 7), delay_ms = r:int(0, 2) }
  end, { judge = judge_slice }),
  proxy_fault("slice-down", function(r)
    return down { kind = "slice", bytes = r:int(1, 7), delay_ms = r:int(0, 2) }
  end, { judge = judge_slice }),
  proxy_fault("close-fin-up", function(r)
    return up { kind = "close", after_bytes = r:int(1, 600) }
  end),
  proxy_fault("close-fin-down", function(r)
    return down { kind = "close", after_bytes = r:int(1, 600) }
  end),
  proxy_fault("close-rst-up", function(r)
    return up { kind = "close", after_bytes = r:int(1, 600), rst = true }
  end),
  proxy_fault("close-rst-down", function(r)
    return down { kind = "close", after_bytes = r:int(1, 600), rst = true }
  end),
  proxy_fault("close-after-ms", function(r)
    return { kind = "close", after_ms = r:int(10, 150), rst = r:chance(0.5) }
  end),
  proxy_fault("reset-up", function(r)
    return up { kind = "reset", after_bytes = r:int(0, 600) }
  end),
  proxy_fault("reset-down", function(r)
    return down { kind = "reset", after_bytes = r:int(0, 600) }
  end),
  proxy_fault("half-close-up", function(r)
    return up { kind = "half_close", after_bytes = r:int(0, 600) }
  end),
  proxy_fault("half-close-down", function(r)
    return down { kind = "half_close", after_bytes = r:int(0, 600) }
  end),
  proxy_fault("blackhole-up", function() return up { kind = "blackhole" } end,
              { lift = lift_and_reset, judge = judge_blackhole }),
  proxy_fault("blackhole-down", function() return down { kind = "blackhole" } end,
              { lift = lift_and_reset, judge = judge_blackhole }),
  proxy_fault("stall-up", function() return up { kind = "stall" } end),
  proxy_fault("stall-down", function() return down { kind = "stall" } end),
  -- A flipped byte in a request's dedupe key makes the server miss the
  -- duplicate when the call is retried: keyed calls may run twice here.
  proxy_fault("corrupt-up", function(r)
    return up { kind = "corrupt", rate = r:int(1, 20) / 10000 }
  end, { garble = true, forgets_keys = true, judge = judge_corrupt,
         direction = "up" }),
  proxy_fault("corrupt-down", function(r)
    return down { kind = "corrupt", rate = r:int(1, 20) / 10000 }
  end, { garble = true, judge = judge_corrupt, direction = "down" }),
  proxy_fault("truncate-up", function(r)
    return up { kind = "truncate", after_bytes = r:int(0, 600) }
  end, { lift = lift_and_reset }),
  proxy_fault("truncate-down", function(r)
    return down { kind = "truncate", after_bytes = r:int(0, 600) }
  end, { lift = lift_and_reset }),
  -- rnp numbers requests per connection and a server closes on an id it
  -- has seen: a duplicated request is refused there. RESP has no ids: the
  -- server runs the duplicate, and every later reply is one off.
  proxy_fault("duplicate-up", function(r)
    return up { kind = "duplicate", rate = r:int(5, 30) / 100 }
  end, { garble = true, doubles = { redis = true } }),
  proxy_fault("duplicate-down", function(r)
    return down { kind = "duplicate", rate = r:int(5, 30) / 100 }
  end, { garble = true }),
  listener_fault("refuse", function() return { kind = "refuse" } end),
  listener_fault("stop-accept", function() return { kind = "stop_accept" } end),
  listener_fault("slow-accept", function(r)
    return { kind = "slow_accept", ms = r:int(20, 120), jitter = r:int(0, 20) }
  end),
  listener_fault("accept-close", function() return { kind = "accept_close" } end),
  listener_fault("accept-reset", function() return { kind = "accept_reset" } end),
  {
    name = "reset-handshake",
    -- Over TLS only: every connection is reset and every new one is reset
    -- again within its first 0 to 200 bytes toward the server, inside the
    -- TLS handshake (a ClientHello alone is longer).
    tls_only = true,
    judge = judge_handshake_reset,
    apply = function(ctx)
      ctx.connect_failures_before = ctx.pools and sum_stats(ctx, function(st)
        return st.connect_failures
      end)
      ctx.f = ctx.px:fault(up { kind = "reset",
                                after_bytes = ctx.rng:int(0, 200) })
      ctx.px:reset_all()
      -- A pool learns of a reset when it reads it: until then a call may
      -- still be written on a connection just reset, and end maybe
      -- executed. The judged window (from apply's return) starts once no
      -- endpoint has a ready connection left.
      for _ = 1, 300 do
        if ctx.pools == nil or sum_stats(ctx, ready_endpoints) == 0 then
          break
        end
        resilnet.sleep(0.01)
      end
    end,
    lift = function(ctx) ctx.px:clear() end,
  },
  {
    name = "reset-all",
    -- RST on every live connection every 50 to 150 ms.
    apply = function(ctx)
      local t_end = resilnet.now() + F.FAULT_TIME
      while resilnet.now() < t_end do
        resilnet.sleep(ctx.rng:int(50, 150) / 1000)
        ctx.px:reset_all()
      end
    end,
    lift = function() end,
  },
  {
    name = "toxic-mix",
    -- Three faults at once, each on about half of the connections.
    apply = function(ctx)
      local menu = {
        { kind = "latency", ms = 20, jitter = 10 },
        { kind = "slice", bytes = 3, delay_ms = 1 },
        { kind = "close", after_bytes = 300 },
        { kind = "reset", after_bytes = 100 },
        { kind = "half_close", after_bytes = 200 },
        { kind = "stall" },
        { kind = "bandwidth", kbps = 100 },
      }
      for _ = 1, 3 do
        local spec = {}
        for k, v in pairs(ctx.rng:pick(menu)) do spec[k] = v end
        spec.direction = ctx.rng:pick { "up", "down", "both" }
        spec.toxicity = 0.5
        ctx.px:fault(spec)
      end
      ctx.px:reset_all()
    end,
    lift = function(ctx) ctx.px:clear() end,
  },
  {
    name = "sigkill-restart",
    -- The rnp server forgets its dedupe keys when it dies.
    forgets_keys = true,
    apply = function(ctx)
      resilnet.sleep(ctx.rng:int(50, 250) / 1000)
      ctx.srv.restart()
    end,
    lift = function() end,
  },
  {
    name = "sigstop-sigcont",
    apply = function(ctx)
      resilnet.sleep(ctx.rng:int(50, 150) / 1000)
      assert(ctx.srv.kill("STOP"))
      -- Longer than the heartbeat timeout (0.3 s): connections are
      -- declared dead while the server holds their requests.
      resilnet.sleep(ctx.rng:int(350, 600) / 1000)
      assert(ctx.srv.kill("CONT"))
    end,
    lift = function() end,
  },
  {
    name = "goaway-restart",
    servers = { rnp = true },
    apply = function(ctx)
      resilnet.sleep(ctx.rng:int(50, 250) / 1000)
      ctx.srv.drain_restart()
    end,
    lift = function() end,
  },
}

F.by_name = {}
for _, f in ipairs(F.list) do F.by_name[f.name] = f end

--- Faults that apply to a server kind ("rnp" | "redis") over plaintext.
function F.for_server(kind)
  local out = {}
  for _, f in ipairs(F.list) do
    if (not f.servers or f.servers[kind]) and not f.tls_only then
      out[#out + 1] = f
    end
  end
  return out
end

--- What the proxy saw lately, whether the server runs, the pools' state:
-- for a case that did not recover.
function F.diagnose(px, srv, pools)
  local ev, counts = px:events(), {}
  for i = math.max(1, #ev - 200), #ev do
    local t = ev[i].type .. (ev[i].error and ("(" .. ev[i].error .. ")") or "")
    counts[t] = (counts[t] or 0) + 1
  end
  local list = {}
  for t, n in pairs(counts) do list[#list + 1] = t .. "=" .. n end
  table.sort(list)
  local states = {}
  for _, mode in ipairs(E.MODES) do
    local st = pools[mode]:stats()
    local eps = st.endpoints or {}
    states[#states + 1] = mode .. ":" .. tostring(eps[1] and eps[1].state)
  end
  return ("server %s; pools %s; last proxy events: %s")
    :format(srv.proc:running() and "running"
              or ("exited: %s %s"):format(tostring(srv.proc._code),
                                          tostring(srv.proc._signal)),
            table.concat(states, " "), table.concat(list, " "))
end

--- Runs one case: a fresh server and proxy, the workload, the fault, its
-- lifting, recovery, the verdict. Returns the verdict with .summary,
-- .problems, .seconds; raises only on a harness failure. Closes
-- everything it opened, whatever happens.
function F.run_case(server_kind, fault, seed, opts)
  opts = opts or {}
  local t_start = resilnet.now()
  local rng = E.rng(seed)
  local opened = {}
  local function track(obj, close)
    opened[#opened + 1] = { obj, close }
    return obj
  end
  local result
  local ok, err = pcall(function()
    local tls = opts.tls == true
    local srv = server_kind == "rnp"
                and S.rnp { lua = opts.lua, tls = tls }
                or assert(S.redis { tls = tls })
    track(srv, srv.close)
    local px = track(assert(resilnet.proxy {
      upstream = srv.endpoint, seed = seed }), function(p) p:close() end)
    -- TLS lets no altered byte through (see the top of this file).
    local garbles = fault.garble and not tls
    local run = E.run { protocol = server_kind, prefix = "c-", rng = rng,
                        garble = garbles,
                        doubles = garbles and fault.doubles
                                  and fault.doubles[server_kind],
                        keyed_as_idempotent = fault.forgets_keys
                          and (garbles or not fault.garble) }
    local pools, closed = {}, {}
    for _, m in ipairs { { "single", 2 }, { "pipelined", 1 } } do
      local pool = track(resilnet.pool(E.pool_options(server_kind,
                                                      px:endpoint(), m[2],
                                                      srv.client_tls)),
                         function(p) p:close() end)
      pool:on("state", function(ev)
        if ev.connection and ev.state == "closed" then
          local code = ev.error or "none"
          closed[code] = (closed[code] or 0) + 1
        end
      end)
      pools[m[1]] = pool
    end
    local workers = E.start_workers(run, pools)
    local ctx = { px = px, srv = srv, rng = rng, run = run, tls = tls,
                  pools = pools, closed = closed,
                  direction = fault.direction }
    local problems = {}
    -- Warm: the workload runs before anything breaks.
    if not E.wait_until(function() return run.outcomes.ok >= 20 end, 5) then
      problems[#problems + 1] = "no progress before the fault"
    end
    local t_fault = resilnet.now()
    fault.apply(ctx)
    run.fault_at = resilnet.now()
    local left = F.FAULT_TIME - (resilnet.now() - t_fault)
    if left > 0 then resilnet.sleep(left) end
    fault.lift(ctx)
    run.lifted_at = resilnet.now()
    local recovered = E.wait_until(function()
      return (run:recovered_all(E.MODES))
    end, F.RECOVER_TIME)
    local recover_s = resilnet.now() - run.lifted_at
    if not recovered then
      local _, missing = run:recovered_all(E.MODES)
      problems[#problems + 1] = ("no success within %g s of lifting the "
        .. "fault for: %s (%s)"):format(F.RECOVER_TIME,
                                        table.concat(missing, ", "),
                                        F.diagnose(px, srv, pools))
    end
    workers.stop()
    if not E.wait_until(function() return workers.running() == 0 end, 5) then
      problems[#problems + 1] = "workers did not stop"
    end
    for _, p in ipairs(fault.judge and fault.judge(ctx) or {}) do
      problems[#problems + 1] = p
    end
    -- Close the client side first: nothing more can reach the server.
    pools.single:close()
    pools.pipelined:close()
    px:close()
    resilnet.sleep(0.02) -- requests the server already read are run
    local executions, mangled = srv.executions()
    local v = run:verdict(executions, mangled)
    for _, p in ipairs(v.problems) do problems[#problems + 1] = p end
    v.problems = problems
    v.ok = #problems == 0
    v.summary = v.summary .. (recovered
      and ("; recovered in %.2f s"):format(recover_s) or "; NOT recovered")
    result = v
  end)
  for i = #opened, 1, -1 do
    local o = opened[i]
    pcall(o[2], o[1])
  end
  if not ok then error(err, 0) end
  result.seconds = resilnet.now() - t_start
  return result
end

return F
