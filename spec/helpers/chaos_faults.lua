-- The chaos suite's fault catalogue and the runner of one case.
--
-- A fault is { name, apply(ctx), lift(ctx), garble, doubles, forgets_keys,
-- servers } (the flags: see E.run in chaos_engine.lua): apply starts it (ctx.px the proxy, ctx.srv the server, ctx.rng
-- the case's generator; apply may wait, the workload runs meanwhile), lift
-- ends it. Parameters are drawn from the case's seed, so a seed replays the
-- same faults with the same parameters (kernel timing aside).
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
  end),
  proxy_fault("slice-down", function(r)
    return down { kind = "slice", bytes = r:int(1, 7), delay_ms = r:int(0, 2) }
  end),
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
              { lift = lift_and_reset }),
  proxy_fault("blackhole-down", function() return down { kind = "blackhole" } end,
              { lift = lift_and_reset }),
  proxy_fault("stall-up", function() return up { kind = "stall" } end),
  proxy_fault("stall-down", function() return down { kind = "stall" } end),
  -- A flipped byte in a request's dedupe key makes the server miss the
  -- duplicate when the call is retried: keyed calls may run twice here.
  proxy_fault("corrupt-up", function(r)
    return up { kind = "corrupt", rate = r:int(1, 20) / 10000 }
  end, { garble = true, forgets_keys = true }),
  proxy_fault("corrupt-down", function(r)
    return down { kind = "corrupt", rate = r:int(1, 20) / 10000 }
  end, { garble = true }),
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

--- Faults that apply to a server kind ("rnp" | "redis").
function F.for_server(kind)
  local out = {}
  for _, f in ipairs(F.list) do
    if not f.servers or f.servers[kind] then out[#out + 1] = f end
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
    local srv = server_kind == "rnp"
                and S.rnp { lua = opts.lua }
                or assert(S.redis {})
    track(srv, srv.close)
    local px = track(assert(resilnet.proxy {
      upstream = srv.endpoint, seed = seed }), function(p) p:close() end)
    local run = E.run { protocol = server_kind, prefix = "c-", rng = rng,
                        garble = fault.garble,
                        doubles = fault.doubles and fault.doubles[server_kind],
                        keyed_as_idempotent = fault.forgets_keys }
    local pools = {}
    for _, m in ipairs { { "single", 2 }, { "pipelined", 1 } } do
      pools[m[1]] = track(resilnet.pool(E.pool_options(server_kind,
                                                       px:endpoint(), m[2])),
                          function(p) p:close() end)
    end
    local workers = E.start_workers(run, pools)
    local ctx = { px = px, srv = srv, rng = rng, run = run }
    local problems = {}
    -- Warm: the workload runs before anything breaks.
    if not E.wait_until(function() return run.outcomes.ok >= 20 end, 5) then
      problems[#problems + 1] = "no progress before the fault"
    end
    local t_fault = resilnet.now()
    fault.apply(ctx)
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
