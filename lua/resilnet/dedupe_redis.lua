-- A dedupe store for resilnet's rnp server, kept in Redis through a
-- resilnet `resp` pool, so that what a key did outlives the server
-- process: a server restarted after a crash replays finished keys instead
-- of running them again.
--
--   local store = require("resilnet.dedupe_redis").new(redis_pool)
--   resilnet.server{ protocol = "rnp", handler = h,
--                    dedupe = { window = 300, store = store } }
--
-- The store's id (store.id, 16 bytes) is what the servers announce in
-- their HELLO (DEDUPE, docs/protocol.md section 9.1), so that clients may
-- retry a keyed request on any server sharing this Redis: new() creates it
-- once in Redis (SET NX at id_key, then GET), so every store on the same
-- Redis and prefix reads the same id.
--
-- One Redis string per key: "P<token>" while a server runs it (SET NX PX
-- window, so a crashed server's claim expires), then "R<reply>" or
-- "E<error message>" for the window. The server's dedupe logic calls
-- these methods from tasks; each may wait on the pool.
local resilnet = require "resilnet"

local M = {}

local Store = {}
Store.__index = Store

local function ms(seconds)
  return math.ceil(seconds * 1000)
end

-- Tokens tell this claim from any other, so that a SET the pool sent
-- twice (it is idempotent here) is still recognised as ours.
local serial = 0
local function new_token(self)
  serial = serial + 1
  return "P" .. self._id .. ":" .. serial
end

-- 16 fresh random bytes: the id a store proposes, kept if it is the first.
local function random_id()
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(16)
  if f then f:close() end
  if bytes and #bytes == 16 then return bytes end
  local t = {}
  for i = 1, 16 do t[i] = string.char(math.random(0, 255)) end
  return table.concat(t)
end

-- The id every store on this Redis and prefix shares: the first one
-- written wins. It waits on the pool (from a task, or running the loop).
local function shared_id(pool, id_key)
  local ok, err = pool:call({ "SET", id_key, random_id(), "NX" },
                            { idempotent = true })
  if ok == nil then return nil, err end
  local id, gerr = pool:call({ "GET", id_key }, { idempotent = true })
  if id == nil then return nil, gerr end
  if type(id) ~= "string" or #id ~= 16 then
    return nil, "dedupe_redis: " .. id_key .. " does not hold a 16-byte "
                .. "store id"
  end
  return id
end

--- new(pool, {prefix = "resilnet:dedupe:", id_key = "resilnet:store-id:"
--- .. prefix}) -> store | nil, err (Redis did not answer for the id)
function M.new(pool, opts)
  if type(pool) ~= "table" or type(pool.call) ~= "function" then
    error("dedupe_redis.new: expected a resilnet pool", 2)
  end
  opts = opts or {}
  local self = setmetatable({ pool = pool,
                              prefix = opts.prefix or "resilnet:dedupe:" },
                            Store)
  self._id = ("%x%x"):format(math.floor(resilnet.now() * 1e6) % 0x7fffffff,
                             math.random(0, 0x7fffffff))
  -- key -> the token of this server's claim, from the claim until its
  -- finish or release: release must delete our claim, never another
  -- server's (that would let a duplicate run there and here).
  self._tokens = {}
  -- Outside the keys' namespace (prefix .. key): no client key can be it.
  local id, err = shared_id(pool, opts.id_key
                                  or "resilnet:store-id:" .. self.prefix)
  if not id then return nil, err end
  self.id = id
  return self
end

local function call(self, request)
  return self.pool:call(request, { idempotent = true })
end

--- claim(key, window) -> "new" | "busy" | "done", reply, failed
-- | nil, err
function Store:claim(key, window)
  local k = self.prefix .. key
  local token = new_token(self)
  -- Kept on failure too: a SET that timed out may have landed, and the
  -- server releases a failed claim.
  self._tokens[key] = token
  for _ = 1, 3 do
    local ok, err = call(self, { "SET", k, token, "NX", "PX", ms(window) })
    if ok == nil then return nil, err end
    if ok == "OK" then return "new" end
    local v, gerr = call(self, { "GET", k })
    if v == nil then return nil, gerr end
    if type(v) == "string" then
      local tag = v:sub(1, 1)
      if v == token then return "new" end
      self._tokens[key] = nil
      if tag == "P" then return "busy" end
      if tag == "R" then return "done", v:sub(2), false end
      if tag == "E" then return "done", v:sub(2), true end
      return nil, "unexpected value at " .. k
    end
    -- resilnet.null: it expired between SET and GET; claim again
  end
  self._tokens[key] = nil
  return "busy"
end

--- finish(key, reply, failed, window) -> true | nil, err
function Store:finish(key, reply, failed, window)
  self._tokens[key] = nil
  local ok, err = call(self, { "SET", self.prefix .. key,
                               (failed and "E" or "R") .. reply,
                               "PX", ms(window) })
  if ok == nil then return nil, err end
  return true
end

-- Deletes the key only while it is still our claim (never a finished
-- answer, nor another server's claim), in one step on the Redis side.
local RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
  .. "return redis.call('DEL', KEYS[1]) end return 0"

--- release(key) -> true | nil, err
function Store:release(key)
  local token = self._tokens[key]
  self._tokens[key] = nil
  if token == nil then return true end -- nothing of ours to give back
  local ok, err = call(self, { "EVAL", RELEASE, 1, self.prefix .. key,
                               token })
  if ok == nil then return nil, err end
  return true
end

return M
