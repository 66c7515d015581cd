-- The specs' one way to start a server process: resilnet.process, and a
-- wait until the child serves (by default: until it prints "listening
-- <port>"). Waits with
-- resilnet.sleep, so it serves a plain spec body and a task alike (in a
-- task, every call in flight keeps running meanwhile).
--
--   local P = require "spec.helpers.process"
--   local srv = P.server { protocol = "rnp", handler = "ledger",
--                          ledger = path }     -- spec/helpers/server.lua
--   pool endpoints = { srv.endpoint }; srv:kill("STOP"); srv:restart()
--   P.read_ledger(path) -> id -> times run; srv:close()
local resilnet = require "resilnet"

local P = {}

--- The interpreter (and module build) the specs run under.
P.LUA = os.getenv("RESILNET_TEST_LUA") or "lua5.4"

--- P.external(argv) -> argv; P.external(command) -> command: a program
-- that is not resilnet's (redis-server, redis-cli, openssl, ip, iptables,
-- cc) started without what a sanitizer spec run preloads. LD_PRELOAD puts
-- ASan's runtime under the instrumented module in Debian's lua; under
-- anything else it only slows it down (ASan's allocator under a
-- redis-server loading 2M keys outlasted a 10 s restart wait) and reports
-- the program's own leaks at exit. (ASAN_OPTIONS does nothing without the
-- runtime.) argv: a resilnet.process / P.start table, whose env gains
-- LD_PRELOAD = false; command: a shell command line for os.execute or
-- io.popen, prefixed with env -u (the same process: $! is the program).
function P.external(argv)
  if type(argv) == "string" then return "env -u LD_PRELOAD " .. argv end
  argv.env = argv.env or {}
  argv.env.LD_PRELOAD = false
  return argv
end

local Server = {}
Server.__index = Server

local function is_fatal(signal)
  return signal ~= "STOP" and signal ~= "CONT"
end

-- The default readiness: the child printed "listening <port>" (which
-- sets srv.port).
local function printed_port(srv)
  local port = srv.out:match("listening (%d+)")
  srv.port = tonumber(port) or srv.port
  return port ~= nil
end

-- Runs the loop until the child serves; raises, with what it printed, when
-- it exited first or took over 10 s.
local function await_ready(srv, level)
  local deadline = resilnet.now() + 10
  while not srv.ready(srv) do
    if not srv.proc:running() or resilnet.now() > deadline then
      srv.proc:close()
      error(("%s did not start: %s"):format(srv.name, srv.out), level + 1)
    end
    resilnet.sleep(0.01)
  end
  srv.endpoint = srv.host .. ":" .. srv.port
  return srv
end

--- P.start(argv, how) -> server: starts argv (a resilnet.process table:
-- program, arguments, env, cwd; stdout and stderr, when not given, are
-- kept for the error message) and returns once it serves: {proc, port,
-- endpoint}. how (optional): host (of the endpoint; default 127.0.0.1),
-- port (when known up front), ready(srv) -> true once it serves
-- (default: it printed "listening <port>", which is then the port) and
-- tmpdir (a directory made for it, removed by srv:close()).
-- Raises, with the child's output, when it did not start.
function P.start(argv, how)
  how = how or {}
  local srv = setmetatable({ out = "", host = how.host or "127.0.0.1",
                             port = how.port, tmpdir = how.tmpdir,
                             ready = how.ready or printed_port }, Server)
  local function keep(chunk) srv.out = srv.out .. chunk end
  local spec = { env = argv.env, cwd = argv.cwd, stdout = keep, stderr = keep }
  if argv.stdout ~= nil then spec.stdout = argv.stdout end
  if argv.stderr ~= nil then spec.stderr = argv.stderr end
  for i, a in ipairs(argv) do spec[i] = a end
  srv.name = table.concat(spec, " ")
  srv.proc = assert(resilnet.process(spec))
  return await_ready(srv, 2)
end

--- srv:kill(signal): sends it ("KILL", "STOP", "CONT", ...; raises if it
-- cannot); a signal that ends the process is waited for (up to 10 s).
function Server:kill(signal)
  assert(self.proc:kill(signal))
  if is_fatal(signal) then assert(self.proc:wait(10)) end
  return true
end

--- srv:restart(): SIGKILL, then the same command again; returns once it
-- serves again (srv.port: the new port, the same when it names one).
function Server:restart()
  assert(self.proc:restart { signal = "KILL", timeout = 5 })
  self.out = ""
  return await_ready(self, 2)
end

--- srv:close(): SIGKILL unless it exited, and reaps it; removes how.tmpdir
-- (a directory made for it), if given.
function Server:close()
  local ok, err = self.proc:close()
  if self.tmpdir then
    os.execute("rm -rf '" .. self.tmpdir .. "'")
    self.tmpdir = nil
  end
  return ok, err
end

--- P.server(opts) -> server: spec/helpers/server.lua, its arguments from
-- opts (protocol, handler, ledger, dedupe, ...; port = N means listen on
-- 127.0.0.1:N). opts.lua: the interpreter; opts.via: a command prefix
-- ({"ip", "netns", "exec", ns}); opts.env: added to the child's.
function P.server(opts)
  local args = {}
  for k, v in pairs(opts) do
    if k == "port" then
      args[#args + 1] = "listen=127.0.0.1:" .. v
    elseif k ~= "lua" and k ~= "via" and k ~= "env" then
      args[#args + 1] = k .. "=" .. tostring(v)
    end
  end
  table.sort(args)
  local argv = { env = opts.env }
  for _, a in ipairs(opts.via or {}) do argv[#argv + 1] = a end
  argv[#argv + 1] = opts.lua or P.LUA
  argv[#argv + 1] = "spec/helpers/server.lua"
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local host = (opts.listen or "127.0.0.1:0"):match("^(.*):%d+$")
  return P.start(argv, { host = host })
end

--- Executions recorded in a ledger file (server.lua's handler=ledger):
-- id -> count.
function P.read_ledger(path)
  local counts = {}
  local f = io.open(path)
  if not f then return counts end
  for id in f:lines() do counts[id] = (counts[id] or 0) + 1 end
  f:close()
  return counts
end

return P
