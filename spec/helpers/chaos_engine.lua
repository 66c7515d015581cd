-- The chaos engine: a seeded workload of calls through a fault proxy, its
-- history, and the verdict. Shared by spec/chaos_spec.lua and tools/soak.lua.
--
-- A workload runs two pools through the proxy at once:
--   single     size 2, two tasks each making one call at a time;
--   pipelined  size 1, one task sending bursts of 4 to 12 calls at once, so
--              several are in flight on one connection when a fault hits.
-- and mixes the call kinds the server offers (rnp: idempotent, keyed and
-- plain; redis: GET, idempotent, and INCR of a key of its own, plain).
--
-- What is checked is what resilnet guarantees (resilnet.check's rules):
-- every call completes exactly once; a plain or keyed call that returned a
-- reply ran exactly once, one that failed with maybe_executed == false
-- never ran, any other failure ran at most once; an idempotent call that
-- returned ran at least once; the server ran nothing nobody sent; every
-- reply is the reply to its own call. Faults that alter bytes (corrupt,
-- duplicate) can make a server run a mangled request or a client read a
-- mangled reply, which no client library can prevent: under those, a
-- reply that is not the call's own counts as "may have run", and an
-- execution of an id with a flipped byte or two is counted as the run of
-- the call whose id it is closest to (ids carry a check, see
-- chaos_servers.lua); one that is close to no single call is counted, not
-- judged. Under every other fault those are violations.
--
-- Portable Lua (5.1 to 5.4, LuaJIT): no integer operators.
local resilnet = require "resilnet"
local S = require "spec.helpers.chaos_servers"

local E = {}

---------------------------------------------------------------------------
-- A seeded generator (Park-Miller): the same seed makes the same choices
-- on every Lua (the products stay below 2^53, exact in a double).

local Rng = {}
Rng.__index = Rng

function E.rng(seed)
  local s = math.floor(tonumber(seed) or 1) % 2147483646
  return setmetatable({ s = s + 1 }, Rng)
end

function Rng:float()
  self.s = (self.s * 16807) % 2147483647
  return self.s / 2147483647
end

--- An integer in [lo, hi].
function Rng:int(lo, hi)
  return lo + math.floor(self:float() * (hi - lo + 1))
end

function Rng:pick(list)
  return list[self:int(1, #list)]
end

function Rng:chance(p)
  return self:float() < p
end

---------------------------------------------------------------------------
-- Protocols: how a call of each kind is made and what its reply must be.

local PROTOCOLS = {}

PROTOCOLS.rnp = {
  kinds = { "idempotent", "keyed", "plain" },
  -- rng drives the handler's delay (0 to 4 ms), so calls overlap.
  make = function(id, kind, rng)
    return id .. " " .. rng:int(0, 4), {
      idempotent = kind == "idempotent",
      key = kind == "keyed" and id or nil,
    }, id
  end,
}

PROTOCOLS.redis = {
  kinds = { "idempotent", "plain" },
  make = function(id, kind, rng, gets)
    if kind == "idempotent" then
      local j = rng:int(1, gets)
      return { "GET", "g:" .. j }, { idempotent = true }, "v" .. j
    end
    return { "INCR", "n:" .. id }, nil, 1
  end,
}

---------------------------------------------------------------------------
-- A run: the history of one fault (a chaos case, or a soak round).

local Run = {}
Run.__index = Run

--- E.run{protocol = "rnp"|"redis", prefix = "a-", garble = bool,
-- doubles = bool, keyed_as_idempotent = bool, gets = n, rng = rng}
-- garble: the fault may alter bytes (see the top of this file).
-- doubles: the fault may deliver a request to the server twice (duplicate
-- toward a server that has no request ids): plain calls are then judged
-- as idempotent ones, since the second run is the network's, not resilnet's.
-- keyed_as_idempotent: the server forgets a dedupe key (a restart: keys
-- live in memory, docs/protocol.md section 9; or the key's bytes were
-- corrupted on the way), so a retried keyed call may run again: judged as
-- idempotent.
function E.run(o)
  local self = setmetatable({}, Run)
  self.proto = assert(PROTOCOLS[o.protocol], "unknown protocol")
  self.protocol = o.protocol
  self.prefix = o.prefix or ""
  self.garble, self.doubles = o.garble, o.doubles
  self.keyed_as_idempotent = o.keyed_as_idempotent
  self.gets = o.gets or 20
  self.rng = o.rng
  self.h = resilnet.check.history()       -- judged against the ledger
  self.reads = resilnet.check.history()   -- redis GETs: completions only
  self.n = 0
  self.wrong = {}        -- replies to another call (strict faults)
  self.garbled = 0       -- mismatched replies under a garbling fault
  self.loading = 0       -- redis LOADING replies (not executed)
  self.codes = {}        -- failure code/maybe -> count
  self.outcomes = { ok = 0, fail = 0, info = 0 }
  self.recovered = {}    -- "mode kind" -> time of a post-lift success
  self.fault_at = nil    -- when the fault's apply returned
  self.lifted_at = nil
  -- Calls invoked while the fault was on, by outcome and by whether they
  -- completed before the lift ("fail during", "ok after", ...).
  self.during = {}
  self.completed, self.invoked = 0, 0
  return self
end

-- Records one call as invoked; returns what is needed to make it.
function Run:new_call(mode)
  self.n = self.n + 1
  local kind = self.rng:pick(self.proto.kinds)
  local id = S.make_id(self.prefix, self.n)
  local request, opts, expect = self.proto.make(id, kind, self.rng, self.gets)
  local hist = self.h
  local judged = kind
  if self.protocol == "redis" and kind == "idempotent" then
    hist = self.reads
  elseif kind == "plain" and self.doubles then
    judged = "idempotent"
  elseif kind == "keyed" and self.keyed_as_idempotent then
    judged = "idempotent"
  end
  hist:invoke(id, judged)
  self.invoked = self.invoked + 1
  return { id = id, kind = kind, mode = mode, request = request, opts = opts,
           expect = expect, hist = hist, t0 = resilnet.now() }
end

local NOT_EXECUTED = { code = "LOADING", maybe_executed = false }
local GARBLED = { code = "EGARBLED", maybe_executed = true }

-- Records the completion of call c.
function Run:done(c, reply, err)
  self.completed = self.completed + 1
  local mismatch = false
  if err == nil then
    mismatch = reply ~= c.expect
  elseif type(err) == "table" and err.code == "EREPLY" then
    if self.protocol == "redis" and tostring(err.message):find("LOADING") then
      -- Redis answers LOADING while it reads its AOF after a restart: the
      -- server says it did not run the command.
      self.loading = self.loading + 1
      err = NOT_EXECUTED
    else
      mismatch = true
    end
  end
  if mismatch then
    if self.garble then
      self.garbled = self.garbled + 1
      reply, err = nil, GARBLED
    elseif #self.wrong < 20 then
      self.wrong[#self.wrong + 1] = ("%s (%s, %s): expected %s, got %s")
        :format(c.id, c.kind, c.mode, tostring(c.expect),
                tostring(err or reply))
    else
      self.wrong.more = (self.wrong.more or 0) + 1
    end
  end
  local outcome = c.hist:complete(c.id, reply, err) or "?"
  self.outcomes[outcome] = (self.outcomes[outcome] or 0) + 1
  if self.fault_at and c.t0 >= self.fault_at
     and (not self.lifted_at or c.t0 < self.lifted_at) then
    local k = outcome .. (self.lifted_at and " after" or " during")
    self.during[k] = (self.during[k] or 0) + 1
  end
  if err and err ~= GARBLED then
    local what = tostring(err.code) .. (err.maybe_executed and "/maybe"
                                        or "/not")
    self.codes[what] = (self.codes[what] or 0) + 1
  end
  if outcome == "ok" and not mismatch and self.lifted_at
     and c.t0 >= self.lifted_at then
    local k = c.mode .. " " .. c.kind
    if not self.recovered[k] then self.recovered[k] = resilnet.now() end
  end
end

--- True once every (mode, kind) pair succeeded with a call made after the
-- fault was lifted; else false and what is missing.
function Run:recovered_all(modes)
  local missing = {}
  for _, mode in ipairs(modes) do
    for _, kind in ipairs(self.proto.kinds) do
      if not self.recovered[mode .. " " .. kind] then
        missing[#missing + 1] = mode .. " " .. kind
      end
    end
  end
  return #missing == 0, missing
end

-- Bytes a corrupt fault flipped in a request's id still leave an id of the
-- same length a byte or two away from the call's own: the execution is
-- that call's. Returns the id, or nil when no single call is that close.
function Run:attribute(text)
  if not self.by_length then
    self.by_length = {}
    for _, id in ipairs(self.h.order) do
      local list = self.by_length[#id]
      if not list then list = {}; self.by_length[#id] = list end
      list[#list + 1] = id
    end
  end
  local best, best_d, ties = nil, 3, 0
  for _, id in ipairs(self.by_length[#text] or {}) do
    local d = 0
    for i = 1, #id do
      if id:byte(i) ~= text:byte(i) then
        d = d + 1
        if d > best_d then break end
      end
    end
    if d < best_d then best, best_d, ties = id, d, 0
    elseif d == best_d then ties = ties + 1 end
  end
  if ties == 0 then return best end
  return nil
end

--- The verdict against the server's executions (id -> count) and its
-- mangled entries (a list of {text, n}). Returns {ok, problems, summary}.
function Run:verdict(executions, mangled_list)
  local mangled, unattributed = 0, 0
  for _, m in ipairs(mangled_list) do
    mangled = mangled + m.n
    local id = self.garble and self:attribute(m.text)
    if id then
      executions[id] = (executions[id] or 0) + m.n
    else
      unattributed = unattributed + m.n
    end
  end
  self.h:ledger(executions)
  local v = self.h:verdict()
  local r = self.reads:verdict()
  local problems = {}
  -- A request corrupted on its way can run as another call's (a flipped
  -- byte in the key makes redis count a neighbour) while its reply still
  -- reads right: under a garbling fault, at most one "ok but never ran"
  -- per mangled execution is the network's doing, not resilnet's.
  local excused = self.garble and mangled or 0
  for _, p in ipairs(v.violations) do
    if excused > 0 and p:find("ok but ran 0 times", 1, true) then
      excused = excused - 1
    else
      problems[#problems + 1] = p
    end
  end
  for _, p in ipairs(r.violations) do problems[#problems + 1] = "GET " .. p end
  for _, w in ipairs(self.wrong) do
    problems[#problems + 1] = "reply to another call: " .. w
  end
  if self.wrong.more then
    problems[#problems + 1] = ("... and %d more wrong replies")
      :format(self.wrong.more)
  end
  if mangled > 0 and not self.garble then
    problems[#problems + 1] = ("the server ran %d request(s) no call made")
      :format(mangled)
  end
  if self.completed ~= self.invoked then
    problems[#problems + 1] = ("%d calls invoked, %d completions")
      :format(self.invoked, self.completed)
  end
  local doubles = 0
  for id, n in pairs(executions) do
    if n > 1 then doubles = doubles + 1 end
  end
  local codes = {}
  for what, n in pairs(self.codes) do codes[#codes + 1] = n .. " " .. what end
  table.sort(codes)
  local summary = ("%d calls: %d ok, %d fail (not run), %d info (maybe run);"
                   .. " %d ran twice+ (idempotent or allowed), %d garbled,"
                   .. " %d mangled executions (%d unattributed)%s;"
                   .. " failures: %s")
    :format(self.invoked, self.outcomes.ok, self.outcomes.fail,
            self.outcomes.info, doubles, self.garbled, mangled, unattributed,
            self.loading > 0 and (", " .. self.loading .. " LOADING") or "",
            #codes > 0 and table.concat(codes, ", ") or "none")
  return { ok = #problems == 0, problems = problems, summary = summary,
           counts = v.counts }
end

---------------------------------------------------------------------------
-- Pools and workers.

--- The client side of a workload: pool options through the proxy. Short
-- deadlines and fast heartbeats keep a case to a second or two; defaults
-- elsewhere (retry attempts 3, ejection) are a user's. tls: the pool's tls
-- option (the server's client_tls), or nil.
function E.pool_options(protocol, endpoint, size, tls)
  return {
    tls = tls,
    endpoints = { endpoint },
    protocol = protocol == "redis" and "resp" or "rnp",
    size = size,
    timeout = 0.6,
    connect_timeout = 0.25,
    heartbeat = { interval = 0.1, timeout = 0.3 },
    reconnect = { initial = 0.01, max = 0.1 },
    retry = { attempts = 3, budget = { tokens = 100, ratio = 0.2 } },
  }
end

E.MODES = { "single", "pipelined" }

--- Starts the workers of run on pools {single = p1, pipelined = p2}.
-- run may be a function returning the current run (the soak starts a new
-- one each round; a call completes in the run it was invoked in).
-- Returns a control: control.stop() asks them to end; control.running()
-- counts those still running. Each worker is bounded in iterations.
function E.start_workers(current, pools, opts)
  if type(current) ~= "function" then
    local fixed = current
    current = function() return fixed end
  end
  opts = opts or {}
  local pace = opts.pace or 0.002
  local max_iter = opts.max_iter or 100000
  local stopped, running = false, 0
  local function single(pool)
    running = running + 1
    for _ = 1, max_iter do
      if stopped then break end
      local run = current()
      local c = run:new_call("single")
      local reply, err = pool:call(c.request, c.opts)
      run:done(c, reply, err)
      -- A failing call may fail fast (refused): keep it from spinning.
      resilnet.sleep(err and 0.01 or pace)
    end
    running = running - 1
  end
  local function pipelined(pool)
    running = running + 1
    for _ = 1, max_iter do
      if stopped then break end
      local run = current()
      local burst, left = run.rng:int(4, 12), 0
      local t0 = resilnet.now()
      for _ = 1, burst do
        local c = run:new_call("pipelined")
        left = left + 1
        local ok, err = pool:send(c.request, c.opts, function(reply, e)
          run:done(c, reply, e)
          left = left - 1
        end)
        if not ok then -- refused at once: the callback never runs
          run:done(c, nil, err)
          left = left - 1
        end
      end
      -- Every call ends by its deadline (0.6 s): wait a little longer, and
      -- leave a missing callback to the verdict (never completed).
      while left > 0 and resilnet.now() - t0 < 3 do resilnet.sleep(0.002) end
      if left > 0 then break end
      resilnet.sleep(pace)
    end
    running = running - 1
  end
  resilnet.spawn(single, pools.single)
  resilnet.spawn(single, pools.single)
  resilnet.spawn(pipelined, pools.pipelined)
  return {
    stop = function() stopped = true end,
    running = function() return running end,
  }
end

--- Waits (the loop runs) until cond() or seconds pass; returns cond().
function E.wait_until(cond, seconds)
  local deadline = resilnet.now() + seconds
  while not cond() and resilnet.now() < deadline do resilnet.sleep(0.005) end
  return cond()
end

return E
