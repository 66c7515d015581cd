-- A small service on resilnet's own protocol (rnp): named counters.
--
--   GET <name>            -> the counter's value        (a read)
--   ADD <name> <n>        -> the new value              (a write)
--   DRAIN <seconds>       -> "draining": a planned restart. The server
--                            stops listening, sends GOAWAY, finishes what
--                            it accepted (for up to <seconds>), exits.
-- Any request may end with " #<ref>", a reference the server writes to its
-- journal (flushed) before it runs the request: the journal is both the
-- counters' durable state (replayed at start) and a record of every
-- execution, which is how examples/demo.lua counts double executions.
--
-- Requests with a dedupe key (pool:call(req, {key = ...})) run at most once
-- per key: in memory, or across restarts with --dedupe=<file>, a file
-- shared with other servers on this host (examples/dedupe_file.lua).
--
--   lua5.4 examples/rpc_server.lua [--port=7400] [--journal=f] [--dedupe=f]
--                                  [--work=ms] [--parent=pid]
-- prints "listening <port>" once it listens (port 0: any free port).
-- --work: after running a request, take up to that many ms more (at
-- random) before answering, as a service doing real work would.
-- --parent: exit once that process is gone (Linux /proc), so that a
-- harness killed outright leaves no server behind.
local resilnet = require "resilnet"

local opts = { port = "0", work = "0" }
for _, a in ipairs(arg) do
  local k, v = a:match("^%-%-(%w+)=(.*)$")
  if not k then error("usage: rpc_server.lua [--port=N] [--journal=file] "
                      .. "[--dedupe=file] [--work=ms] [--parent=pid]", 0) end
  opts[k] = v
end
local here = (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/"

local counters = {}
local journal
if opts.journal then
  local f = io.open(opts.journal)
  for line in f and f:lines() or function() end do
    local name, n = line:match("^%S+ ADD (%S+) (%-?%d+)$")
    if name then counters[name] = (counters[name] or 0) + tonumber(n) end
  end
  if f then f:close() end
  journal = assert(io.open(opts.journal, "a"))
end

local srv
local function handler(request)
  local body, ref = request:match("^(.-) #(%S+)$")
  body = body or request
  local cmd, name, n = body:match("^(%u+) ?(%S*) ?(%S*)$")
  if cmd == "DRAIN" then
    -- Replies first, then closes: close waits, so it runs in its own task.
    resilnet.spawn(function()
      srv:close { goaway = true, drain = tonumber(name) or 5 }
      os.exit(0) -- drained (the --parent watch would keep run() going)
    end)
    return "draining"
  end
  n = tonumber(n)
  if not (cmd == "GET" and name ~= "" or cmd == "ADD" and n) then
    error("bad request: " .. body, 0)  -- an error reply, nothing ran
  end
  if journal and ref then
    journal:write(ref, " ", body, "\n")
    journal:flush()
  end
  if cmd == "ADD" then counters[name] = (counters[name] or 0) + n end
  local value = tostring(counters[name] or 0)
  local work = tonumber(opts.work)
  if work > 0 then resilnet.sleep(math.random() * work / 1000) end
  return value
end

-- A planned restart starts the next process while the last one still
-- holds the port for a moment: keep trying to bind for up to 5 s.
local store = opts.dedupe and dofile(here .. "dedupe_file.lua").open(opts.dedupe)
local port, err = tonumber(opts.port), nil
for _ = 1, 250 do
  srv, err = resilnet.server {
    listen = "127.0.0.1:" .. port, protocol = "rnp", handler = handler,
    dedupe = { window = 60, store = store },
  }
  if srv or port == 0 then break end
  resilnet.sleep(0.02)
end
assert(srv, err)
if opts.parent then
  resilnet.spawn(function()
    repeat
      resilnet.sleep(0.5)
      local f = io.open("/proc/" .. opts.parent .. "/stat")
      if f then f:close() end
    until not f
    os.exit(0)
  end)
end
io.stdout:write("listening ", select(2, srv:address()), "\n")
io.stdout:flush()
resilnet.run() -- until DRAIN (or a signal)
