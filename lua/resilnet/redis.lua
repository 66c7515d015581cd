-- resilnet.redis: Redis deployment helpers on resilnet pools.
--
-- sentinel{...} -> endpoints function, sentinel object: discovery through
-- Redis Sentinel, following the Sentinel client guidelines
-- (https://redis.io/docs/reference/sentinel-clients/):
--  * the Sentinels are asked in order (SENTINEL MASTER <name>, which is
--    GET-MASTER-ADDR-BY-NAME's address plus the config epoch; SENTINEL
--    REPLICAS for role = "replica"); the first that answers moves to the
--    head of the list;
--  * each Sentinel is a resilnet pool of one connection, so a dead one
--    gets reconnect backoff like any endpoint: while it backs off it is
--    passed over (and asked last, if no other one answers);
--  * a switch of master is heard at once: each Sentinel's pool holds a
--    subscription to +switch-master (pool:subscribe); a message naming our
--    master, or a "gap" (the subscription's connection was lost and came
--    back, a message may be missed), makes every Sentinel be asked again
--    (SENTINEL MASTER, highest config epoch wins) at once. A poll of every
--    Sentinel each poll_interval (5 s) stays as the safety net. A switch
--    publishes the new list
--    to every pool using the function at once (a "failover" event on each)
--    and set_endpoints drains the old master's connections: they finish
--    the calls they carry and take no new ones.
--  * the pool itself asks again after a connect failure and every
--    resolve_ttl (lua/resilnet/discovery.lua runs the function).
-- Passwords are sent, never logged nor put into events or errors.
local resilnet = require "resilnet"
local opt = require "resilnet.options"

local ipairs, next, pairs, setmetatable, table, tostring, type = ipairs,
      next, pairs, setmetatable, table, tostring, type

local M = {}

local types = opt.types
types.sentinel_list = { "a non-empty array of \"host:port\" strings",
  function(v)
    if type(v) ~= "table" or #v == 0 then return false end
    for k, e in pairs(v) do
      if not opt.is_integer(k) or k < 1 or k > #v or type(e) ~= "string"
         or e == "" then
        return false
      end
    end
    return true
  end }
types.sentinel_role = { '"master" or "replica"', function(v)
  return v == "master" or v == "replica"
end }

local sentinel_schema = {
  { "sentinels", "sentinel_list", nil, required = true },
  { "name", "string", nil, required = true },
  { "role", "sentinel_role", "master" },
  { "sentinel_password", "string" },
  { "sentinel_username", "string" },
  -- one question to one Sentinel, connect included
  { "timeout", "positive", 0.5 },
  -- how often every Sentinel is asked whether the master moved (the
  -- safety net: +switch-master is heard at once)
  { "poll_interval", "positive", 5 },
}
M.sentinel_options = sentinel_schema

local Sentinel = {}
Sentinel.__index = Sentinel

-- "host:port" of a Sentinel's answer ([v6]:port for an IPv6 host).
local function address(host, port)
  if host:find(":", 1, true) then
    return "[" .. host .. "]:" .. port
  end
  return host .. ":" .. port
end

-- The pool of one Sentinel, made on first use; nil once closed (a
-- question still going then must not make a pool nobody closes).
function Sentinel:_pool(addr)
  local p = self.pools[addr]
  if not p and not self.closed then
    -- Two connections: one for questions, one held by the subscription.
    local po = { endpoints = { addr }, protocol = "resp", size = 2,
                 timeout = self.o.timeout, connect_timeout = self.o.timeout,
                 reconnect = { initial = 0.1, max = 5 }, resolve_ttl = 0 }
    -- AUTH on every connection, before it takes a question; a refused
    -- password is EAUTH with the server's words, never the password.
    po.password, po.username = self.o.sentinel_password,
                               self.o.sentinel_username
    p = resilnet.pool(po)
    self.pools[addr] = p
    self:_subscribe(addr, p)
  end
  return p
end

-- +switch-master on one Sentinel's pool: "<name> <old-ip> <old-port>
-- <new-ip> <new-port>". A message for our master, or a gap (messages may
-- have been missed), asks every Sentinel again at once. Nothing is asked
-- once this pool is no longer the Sentinel's current one (closed, or the
-- pools were closed when no pool was attached): that would open new ones.
function Sentinel:_subscribe(addr, p)
  local name = self.o.name
  self.subs[addr] = p:subscribe { channels = { "+switch-master" },
    handler = function(kind, _, payload)
      local ours = kind == "gap" or (kind == "message"
        and type(payload) == "string" and payload:match("^(%S+)") == name)
      if ours and not self.closed and self.pools[addr] == p
         and next(self.attached) ~= nil then
        self.heard = self.heard + 1
        self:_poll_once()
      end
    end }
end

-- A Sentinel backing off after failed connects is passed over first.
local function backing_off(p)
  if not p then return true end
  local ep = p:stats().endpoints[1]
  return ep and (ep.state == "transient_failure" or ep.state == "ejected")
end

-- One question to one Sentinel: reply, or nil, err.
function Sentinel:_ask_one(addr, request)
  local p = self:_pool(addr)
  if not p then return nil, "closed" end
  return p:call(request, { timeout = self.o.timeout, idempotent = true })
end

-- The master from one Sentinel's SENTINEL MASTER answer (a flat
-- field/value array, or a map on RESP3): { addr = "host:port", epoch = n },
-- or nil, why. SENTINEL MASTER rather than GET-MASTER-ADDR-BY-NAME: the
-- same address plus the config epoch, which a failover raises, so an
-- answer from a Sentinel that has not heard of the switch yet (Sentinels
-- learn a new configuration from each other every 2 s) never moves the
-- pool back to the old master.
local function parse_master(reply)
  if type(reply) ~= "table" then
    return nil, "unexpected answer: " .. type(reply)
  end
  local f = reply
  if reply[1] ~= nil then
    f = {}
    for i = 1, #reply - 1, 2 do f[reply[i]] = reply[i + 1] end
  end
  if type(f.ip) ~= "string" or f.port == nil then
    return nil, "unexpected answer: no ip and port"
  end
  return { addr = address(f.ip, tostring(f.port)),
           epoch = tonumber(f["config-epoch"]) or 0 }
end

-- The healthy replicas' addresses from SENTINEL REPLICAS, or nil, why.
local function parse_replicas(reply)
  if type(reply) ~= "table" then
    return nil, "unexpected answer: " .. type(reply)
  end
  local out = {}
  for _, r in ipairs(reply) do
    local f = {}
    if type(r) == "table" then
      if r[1] ~= nil then
        for i = 1, #r - 1, 2 do f[r[i]] = r[i + 1] end
      else
        f = r -- RESP3 map
      end
    end
    local flags = tostring(f.flags or "")
    if f.ip and f.port and f["master-link-status"] == "ok"
       and not flags:find("s_down", 1, true)
       and not flags:find("o_down", 1, true)
       and not flags:find("disconnected", 1, true) then
      out[#out + 1] = address(f.ip, tostring(f.port))
    end
  end
  if #out == 0 then return nil, "no healthy replica" end
  return out
end

--- s:ask(d) -> list | nil, err: asks the Sentinels in order (those backing
-- off last); the first that answers moves to the head. d: the discovery
-- run asking (it gets the list as its answer, not as a push), or nil.
function Sentinel:ask(d)
  local o, order = self.o, self.order
  local request, parse
  if o.role == "master" then
    request = { "SENTINEL", "MASTER", o.name }
    parse = parse_master
  else
    request = { "SENTINEL", "REPLICAS", o.name }
    parse = parse_replicas
  end
  local tried, last_err = {}, "no Sentinel answered"
  for pass = 1, 2 do
    for i = 1, #order do
      local addr = order[i]
      if self.closed then return nil, "closed" end
      if not tried[addr] and (pass == 2 or not backing_off(self:_pool(addr)))
      then
        tried[addr] = true
        local reply, err = self:_ask_one(addr, request)
        local found
        if reply ~= nil then
          found, err = parse(reply)
        end
        if found then
          -- Guidelines: the Sentinel that answered goes first next time.
          for j = 1, #order do
            if order[j] == addr then
              table.remove(order, j)
              break
            end
          end
          table.insert(order, 1, addr)
          self.asked_from = addr
          if o.role == "master" then
            self:_observe(found, addr, d)
            return { self.master }
          end
          self.replicas = table.concat(found, " ")
          return found
        end
        last_err = addr .. ": " .. tostring(err)
      end
    end
  end
  return nil, last_err
end

-- A master seen ({addr, epoch}): an answer older than the one known is
-- ignored; a new address is a failover, announced on every pool and
-- pushed to each (except `except`, the run that returns it).
function Sentinel:_observe(seen, from, except)
  if self.epoch and seen.epoch < self.epoch then return end
  local old, master = self.master, seen.addr
  self.master, self.epoch = master, seen.epoch
  if old == nil or old == master then return end
  self.failovers = self.failovers + 1
  for d in pairs(self.attached) do
    if d:is_open() then
      d:emit { type = "failover", name = self.o.name, old = old,
               new = master, sentinel = from }
      if d ~= except then d:publish { master } end
    end
  end
end

-- One poll: every Sentinel not backing off is asked for the master, in
-- parallel; the answer with the highest config epoch wins (_observe
-- publishes a change to every pool). Asking all of them, not the head
-- alone, sees a switch as soon as the leader that made it answers.
function Sentinel:_poll_once(d)
  if self.o.role == "replica" then return self:_poll_replicas() end
  local request = { "SENTINEL", "MASTER", self.o.name }
  local best, from, pending = nil, nil, 0
  -- Pools closed meanwhile (no pool attached any more) are not made again.
  local pools = self.pools
  -- All at once: a frozen Sentinel costs its timeout, not the others'.
  for _, addr in ipairs(self.order) do
    if not backing_off(self:_pool(addr)) then
      pending = pending + 1
      resilnet.spawn(function()
        local reply = not self.closed and self.pools == pools
                      and self:_ask_one(addr, request)
        local seen = reply and parse_master(reply)
        if seen and (best == nil or seen.epoch > best.epoch) then
          best, from = seen, addr
        end
        pending = pending - 1
      end)
    end
  end
  -- Each question ends within its timeout (connect included).
  while pending > 0 do
    if d then d:sleep(0.005) else resilnet.sleep(0.005) end
  end
  if best and not self.closed then self:_observe(best, from) end
end

-- role = "replica": the healthy replicas as the head Sentinel lists them;
-- a list that differs from the last one is pushed to every pool.
function Sentinel:_poll_replicas()
  local before = self.replicas
  local list = self:ask() -- sets self.replicas
  if not list or self.replicas == before then return end
  for d in pairs(self.attached) do
    if d:is_open() then d:publish(list) end
  end
end

-- Polls the Sentinels while a pool is attached; ends once none is,
-- closing the Sentinel pools (a pool made later opens them again).
function Sentinel:_poll(d)
  repeat
    while not self.closed do
      d:sleep(self.o.poll_interval)
      local open
      for a in pairs(self.attached) do
        if a:is_open() then open = a else self.attached[a] = nil end
      end
      if not open then break end
      d = open
      if not self.closed then self:_poll_once(d) end
    end
    if next(self.attached) == nil then self:_close_pools() end
    -- A pool that attached while those closed is polled for too.
    local again = not self.closed and next(self.attached)
    if again then d = again end
  until not again
  self.polling = false
end

function Sentinel:_attach(d)
  if self.attached[d] then return end
  self.attached[d] = true
  d:on_close(function()
    self.attached[d] = nil
  end)
  if not self.polling then
    self.polling = true
    resilnet.spawn(function() self:_poll(d) end)
  end
end

function Sentinel:_close_pools()
  -- Forgotten all at once: each close waits, and nothing may find a pool
  -- that is closing meanwhile.
  local pools, subs = self.pools, self.subs
  self.pools, self.subs = {}, {}
  for _, sub in pairs(subs) do sub:close() end
  for _, p in pairs(pools) do p:close() end
end

--- s:close(): closes the Sentinel pools for good (from a task or a
-- script; from a plain callback it starts closing them). Pools still using
-- the function keep their list and ask in vain.
function Sentinel:close()
  if not self.closed then
    self.closed = true
    self:_close_pools()
  end
  return true
end

--- s:stats(): { failovers = n, master = "host:port" | nil, sentinels =
-- the current order, asked_from = the Sentinel that answered last,
-- heard = +switch-master messages (and gaps) that made it ask again }.
function Sentinel:stats()
  local order = {}
  for i, a in ipairs(self.order) do order[i] = a end
  return { failovers = self.failovers, master = self.master,
           sentinels = order, asked_from = self.asked_from,
           heard = self.heard }
end

--- resilnet.redis.sentinel{sentinels = {...}, name = "mymaster", ...} ->
-- endpoints function, sentinel object. See docs/api.md.
function M.sentinel(opts)
  local o = opt.validate("resilnet.redis.sentinel", sentinel_schema, opts)
  local order = {}
  for i, a in ipairs(o.sentinels) do order[i] = a end
  local s = setmetatable({ o = o, order = order, pools = {}, subs = {},
                           heard = 0,
                           attached = setmetatable({}, { __mode = "k" }),
                           failovers = 0, closed = false, polling = false },
                         Sentinel)
  local function endpoints(d)
    if s.closed then return nil, "the Sentinel object is closed" end
    if type(d) == "table" and d.publish then s:_attach(d) end
    return s:ask(d)
  end
  return endpoints, s
end

return M
