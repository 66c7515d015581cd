-- The specs' resilnet server process, one script for every kind they need,
-- set by name=value arguments:
--
--   protocol=resp        any protocol resilnet.server speaks (default resp)
--   listen=HOST:PORT     default 127.0.0.1:0 (any free port); a fixed port
--                        is retried for up to 5 s, for a restart that comes
--                        up while the last process still holds it
--   handler=echo         what a request does (below); default echo
--   ledger=PATH          the file the ledger handler appends to
--   dedupe=on            rnp: dedupe keyed requests (window 60 s, capacity
--                        100,000); default off
--   dedupe_store=HOST:PORT  with dedupe: keep the keys in this Redis, so a
--                        restarted server replays them
--   max_concurrent=N, backlog=N   passed on to resilnet.server
--   parent=PID           exit once that process is gone (a spec killed by
--                        its timeout cannot stop what it started)
--   tls_certificate=PATH, tls_key=PATH   serve over TLS with these files
--
-- Handlers:
--   echo    a RESP request {"HOLD", seconds} is answered "held" after that
--           long (it keeps a connection busy); any other RESP request is
--           answered with its second element (ECHO x -> x), or its first;
--           a request of any other protocol with itself.
--   ledger  a request {"EXEC", id, delay_ms} (resp) or "<id> <delay_ms>"
--           appends id to the ledger file, flushed before anything else
--           happens so the record survives SIGKILL, waits delay_ms, then
--           replies id. The specs count lines per id to prove what ran.
--           "DRAIN" starts a planned shutdown: GOAWAY to every client (rnp),
--           requests in flight finish, then the process exits.
--
-- Prints "listening <port>" once it serves, and runs until killed. Start
-- it with spec/helpers/process.lua (P.server), which also reads ledgers.
local resilnet = require "resilnet"

local USAGE = "usage: server.lua [protocol=P] [listen=HOST:PORT] "
              .. "[handler=echo|ledger] [ledger=PATH] [dedupe=on|off] "
              .. "[dedupe_store=HOST:PORT] [max_concurrent=N] [backlog=N] "
              .. "[parent=PID] [tls_certificate=PATH tls_key=PATH]"

local o = { protocol = "resp", listen = "127.0.0.1:0", handler = "echo",
            dedupe = "off" }
local known = { ledger = true, dedupe_store = true, max_concurrent = true,
                backlog = true, parent = true, tls_certificate = true,
                tls_key = true }
for i = 1, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if not k or (o[k] == nil and not known[k]) then
    error("server.lua: bad argument '" .. arg[i] .. "'\n" .. USAGE, 0)
  end
  o[k] = v
end

local srv

local function echo(request)
  if type(request) ~= "table" then return request end
  if request[1] == "HOLD" then
    resilnet.sleep(tonumber(request[2]) or 0)
    return "held"
  end
  return request[2] or request[1]
end

local function ledger_handler()
  local ledger = assert(io.open(assert(o.ledger, "ledger=PATH is needed"),
                                "a"))
  return function(request)
    local resp = type(request) == "table"
    if (resp and request[1] or request) == "DRAIN" then
      resilnet.spawn(function() srv:close { goaway = true, drain = 5 } end)
      return "draining"
    end
    local id, delay
    if resp then
      id, delay = request[2], request[3] or "0"
    else
      id, delay = request:match("^(%S+) (%d+)$")
    end
    assert(id, "bad request")
    ledger:write(id, "\n")
    ledger:flush()
    delay = tonumber(delay)
    if delay > 0 then resilnet.sleep(delay / 1000) end
    return id
  end
end

local handlers = { echo = function() return echo end, ledger = ledger_handler }
local handler = assert(handlers[o.handler], "handler: echo|ledger")()

local dedupe = false
if o.dedupe == "on" then
  dedupe = { window = 60, capacity = 100000 }
  if o.dedupe_store then
    local redis = resilnet.pool { endpoints = { o.dedupe_store },
                                  protocol = "resp" }
    dedupe.store = assert(require("resilnet.dedupe_redis").new(redis))
  end
end

local err
for _ = 1, 250 do
  srv, err = resilnet.server {
    listen = o.listen, protocol = o.protocol, handler = handler,
    dedupe = dedupe, max_concurrent = tonumber(o.max_concurrent),
    backlog = tonumber(o.backlog),
    tls = o.tls_certificate and { certificate = o.tls_certificate,
                                  key = o.tls_key } or nil,
  }
  if srv or o.listen:match(":0$") then break end
  resilnet.sleep(0.02)
end
assert(srv, err)
local _, port = srv:address()
io.stdout:write("listening ", port, "\n")
io.stdout:flush()

-- Our parent's pid, from /proc/self/stat: the field after the state, which
-- follows the name in parentheses (a name may hold spaces). A parent that
-- exits hands us to another process at once, even while it is a zombie.
local function parent_pid()
  local f = assert(io.open("/proc/self/stat"))
  local stat = f:read("*l")
  f:close()
  return tonumber(stat:match("%)%s+%S+%s+(%d+)"))
end

if o.parent then
  local parent = assert(tonumber(o.parent), "parent=PID")
  resilnet.spawn(function()
    while parent_pid() == parent do resilnet.sleep(0.2) end
    os.exit(0)
  end)
end
resilnet.run()
