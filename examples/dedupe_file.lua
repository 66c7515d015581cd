-- A dedupe store for resilnet's rnp server kept in an append-only file, so
-- that what a key did outlives the server process: restarted after a
-- SIGKILL, the server replays finished keys instead of running them again.
--
--   local store = dofile("examples/dedupe_file.lua").open("/tmp/keys.log")
--   resilnet.server{ protocol = "rnp", handler = h,
--                    dedupe = { window = 300, store = store } }
--
-- The store interface (the server calls these from tasks; they may wait):
--   store:claim(key, window)  -> "new"                  the caller runs it
--                              | "busy"                 running elsewhere
--                              | "done", reply, failed  replay this answer
--                              | nil, err               refused, not run
--   store:finish(key, reply, failed, window) -> true | nil, err
--   store:release(key) -> true | nil, err  (claimed, but it never ran)
--
-- One line per event, key and reply in hex:
--   C <until> <key>           claimed (in progress) until <until>
--   R <until> <key> <reply>   finished with a reply, kept until <until>
--   E <until> <key> <message> finished with an error
--   X 0 <key>                 released: forgotten
-- <until> is os.time() + window. Each line is flushed before the method
-- returns: it reaches the kernel, so it survives the process being killed
-- (not the machine crashing: plain Lua cannot fsync).
--
-- A key claimed by a process that was killed before it finished stays
-- "busy" until its window ends: nobody knows whether it ran, so a retry
-- gets IN_PROGRESS (and in the end fails with maybe_executed = true)
-- rather than running a second time.
--
-- Several server processes on one host may share one file: before each
-- claim a store reads what the others appended. Two processes claiming
-- the same key in the same instant could both win; a store that needs
-- that guarantee wants an atomic claim (SET NX in Redis, see
-- lua/resilnet/dedupe_redis.lua). The file only grows; a long-lived
-- service would compact it.
--
-- It sets no `id` (docs/protocol.md section 9.1), so the server announces
-- its incarnation as its key store: clients retry a keyed call only on
-- the same server process, never after a restart nor on another process
-- sharing the file. That is safe; to let them, give the store an `id` of
-- 16 bytes kept with the file (the same for every process using it, and
-- no other store's).
local M = {}

local Store = {}
Store.__index = Store

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Applies one line to the in-memory view: the last line for a key wins.
local function apply(keys, tag, until_, key, data)
  if tag == "X" then
    keys[key] = nil
  else
    keys[key] = { state = tag, until_ = until_, data = data }
  end
end

-- Reads the lines appended since the last look (by anyone), whole lines
-- only: another process may be half-way through writing one.
function Store:_catch_up()
  local f = self.reader
  f:seek("set", self.pos)
  local text = f:read("*a") or ""
  local last = text:match(".*()\n")
  if not last then return end
  self.pos = self.pos + last
  for tag, until_, key, data in text:sub(1, last):gmatch(
      "(%u) (%d+) (%x+) ?(%x*)\n") do
    apply(self.keys, tag, tonumber(until_), unhex(key), unhex(data))
  end
end

function Store:_append(tag, until_, key, data)
  local line = ("%s %d %s%s\n"):format(tag, until_, hex(key),
                                       data and " " .. hex(data) or "")
  local ok, err = self.writer:write(line)
  if ok then ok, err = self.writer:flush() end
  if not ok then return nil, err end
  apply(self.keys, tag, until_, key, data or "")
  return true
end

--- open(path) -> store: appends to path, after loading what it holds.
function M.open(path)
  local writer = assert(io.open(path, "a"))
  writer:setvbuf("full") -- one write(2) per line, at flush
  local reader = assert(io.open(path, "r"))
  local self = setmetatable({ keys = {}, pos = 0, writer = writer,
                              reader = reader }, Store)
  self:_catch_up()
  return self
end

function Store:claim(key, window)
  self:_catch_up()
  local now = os.time()
  local e = self.keys[key]
  if e and e.until_ >= now then
    if e.state == "C" then return "busy" end
    return "done", e.data, e.state == "E"
  end
  local ok, err = self:_append("C", now + math.ceil(window), key)
  if not ok then return nil, err end
  return "new"
end

function Store:finish(key, reply, failed, window)
  return self:_append(failed and "E" or "R", os.time() + math.ceil(window),
                      key, reply)
end

function Store:release(key)
  return self:_append("X", 0, key)
end

return M
