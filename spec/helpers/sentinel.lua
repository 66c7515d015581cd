-- A Redis master, one replica and three Sentinels on loopback for the
-- specs: `redis-server --sentinel` with a config generated in a temp dir,
-- ports chosen free, every wait bounded. Started through resilnet.process
-- (spec/helpers/process.lua), so a test can freeze the master with
-- SIGSTOP.
--
--   local S = require "spec.helpers.sentinel"
--   local why = S.unavailable()            -- nil, or why to skip
--   local t = S.start { name = "mymaster", down_after = 1000 }
--   t.master, t.replica (servers: .port, .endpoint, :kill("STOP"))
--   t.sentinels (servers), t.sentinel_endpoints ({"127.0.0.1:p", ...})
--   S.cmd(port, {"SENTINEL", "MASTERS"}) -> reply   (blocking, 1 s)
--   t:close()
-- A helper module: plain assert and error, no busted globals.
local socket = require "socket"
local R = require "spec.helpers.redis"
local P = require "spec.helpers.process"
local resilnet = require "resilnet"

local S = {}

-- One RESP reply from a LuaSocket connection: strings, integers, arrays;
-- nil for a null; { err = "..." } for an error reply.
local function read_reply(c)
  local line, err = c:receive("*l")
  if not line then error("S.cmd: " .. tostring(err)) end
  local t, rest = line:sub(1, 1), line:sub(2)
  if t == "+" then return rest end
  if t == "-" then return { err = rest } end
  if t == ":" then return tonumber(rest) end
  if t == "$" then
    local n = tonumber(rest)
    if n < 0 then return nil end
    local s = c:receive(n + 2)
    return s and s:sub(1, n)
  end
  if t == "*" then
    local n = tonumber(rest)
    if n < 0 then return nil end
    local out = {}
    for i = 1, n do out[i] = read_reply(c) end
    return out
  end
  error("S.cmd: unexpected reply line " .. line)
end

--- S.cmd(port, args[, password]) -> reply, or nil, why: one command on a
-- fresh connection (AUTH first with a password), blocking up to 1 s (for
-- setup checks, never under load).
function S.cmd(port, args, password)
  local c = socket.tcp()
  c:settimeout(1)
  if not c:connect("127.0.0.1", port) then
    c:close()
    return nil, "refused"
  end
  local function send(list)
    local parts = { "*" .. #list }
    for _, a in ipairs(list) do
      a = tostring(a)
      parts[#parts + 1] = "$" .. #a
      parts[#parts + 1] = a
    end
    c:send(table.concat(parts, "\r\n") .. "\r\n")
  end
  if password then send { "AUTH", password } end
  send(args)
  local ok, reply = pcall(function()
    if password then read_reply(c) end
    return read_reply(c)
  end)
  c:close()
  if not ok then return nil, reply end
  return reply
end

-- A flat key/value array (SENTINEL MASTER, INFO-like replies) as a table.
function S.fields(reply)
  local f = {}
  if type(reply) == "table" then
    for i = 1, #reply - 1, 2 do f[reply[i]] = reply[i + 1] end
  end
  return f
end

-- Waits (resilnet.sleep, so tasks run meanwhile) until cond() or seconds.
local function wait_until(cond, seconds, what)
  local deadline = resilnet.now() + seconds
  while not cond() do
    if resilnet.now() > deadline then
      error("sentinel helper: gave up after " .. seconds .. " s waiting for "
            .. what, 2)
    end
    resilnet.sleep(0.05)
  end
end

local function tmpdir()
  local path = os.tmpname()
  os.remove(path)
  local r = os.execute("mkdir -p " .. path)
  assert(r == true or r == 0, "mkdir " .. path)
  return path
end

--- nil if `redis-server --sentinel` works here, else why not.
function S.unavailable()
  if not R.installed() then return "redis-server is not installed" end
  local f = io.popen("redis-server --help 2>&1")
  local help = f and f:read("*a") or ""
  if f then f:close() end
  if not help:find("--sentinel", 1, true) then
    return "this redis-server has no sentinel mode (--sentinel)"
  end
  return nil
end

-- A redis-server on port with args, logging to log; returns once it
-- answers PING. Without the sanitizer runtime a sanitized spec run
-- preloads: it would slow the servers down and widen the failover's own
-- replication window (see sentinel_spec), which is Redis's, not ours.
local function launch(port, args, log)
  local argv = { "redis-server", "--port", port, "--bind", "127.0.0.1",
                 "--save", "", "--daemonize", "no",
                 env = { LD_PRELOAD = false }, stdout = log }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return P.start(argv, { port = port,
                         ready = function() return R.ping(port) end })
end

local Topology = {}
Topology.__index = Topology

--- The address the Sentinels name as master now (asked of each in turn).
function Topology:master_addr()
  for _, s in ipairs(self.sentinels) do
    local r = S.cmd(s.port, { "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                              self.name }, self.sentinel_password)
    if type(r) == "table" and r[1] then return r[1] .. ":" .. r[2] end
  end
  return nil
end

function Topology:close()
  for _, s in ipairs(self.procs) do
    pcall(function() s.proc:kill("CONT") end)
    pcall(function() s.proc:close() end)
  end
  self.procs = {}
  os.execute("rm -rf " .. self.dir)
end

--- S.start{name, down_after (ms), failover_timeout (ms), master_args,
-- sentinel_password (requirepass of the Sentinels, which then also use it
-- with each other)} -> topology. Returns once the replica is in sync and every Sentinel knows
-- the replica and the two other Sentinels (up to 20 s), else raises.
function S.start(o)
  o = o or {}
  local t = setmetatable({ name = o.name or "mymaster", dir = tmpdir(),
                           procs = {}, sentinels = {},
                           sentinel_password = o.sentinel_password,
                           sentinel_endpoints = {} }, Topology)
  local ok, err = pcall(function()
    local mport = R.free_port()
    local margs = { "--dir", t.dir, "--dbfilename", "master.rdb",
                    "--appendonly", "no" }
    for _, a in ipairs(o.master_args or {}) do margs[#margs + 1] = a end
    t.master = launch(mport, margs, t.dir .. "/master.log")
    t.procs[#t.procs + 1] = t.master
    local rport = R.free_port()
    t.replica = launch(rport, { "--dir", t.dir, "--dbfilename",
                                  "replica.rdb", "--appendonly", "no",
                                  "--replicaof", "127.0.0.1", mport },
                         t.dir .. "/replica.log")
    t.procs[#t.procs + 1] = t.replica
    wait_until(function()
      local info = S.cmd(rport, { "INFO", "replication" })
      return type(info) == "string"
        and info:find("master_link_status:up", 1, true) ~= nil
    end, 10, "the replica to sync")
    for i = 1, 3 do
      local port = R.free_port()
      local conf = ("%s/sentinel%d.conf"):format(t.dir, i)
      local f = assert(io.open(conf, "w"))
      f:write(("port %d\nbind 127.0.0.1\ndir %s\n"
               .. "sentinel monitor %s 127.0.0.1 %d 2\n"
               .. "sentinel down-after-milliseconds %s %d\n"
               .. "sentinel failover-timeout %s %d\n"
               .. "sentinel parallel-syncs %s 1\n"):format(
              port, t.dir, t.name, mport, t.name, o.down_after or 1000,
              t.name, o.failover_timeout or 5000, t.name))
      if o.sentinel_password then
        f:write(("requirepass %s\nsentinel sentinel-pass %s\n"):format(
                o.sentinel_password, o.sentinel_password))
      end
      f:close()
      local s = P.start({ "redis-server", conf, "--sentinel",
                          env = { LD_PRELOAD = false },
                          stdout = t.dir .. "/sentinel" .. i .. ".log" },
                        { port = port, ready = function()
                            -- Up: it answers, PONG or (with a password)
                            -- NOAUTH.
                            local r = S.cmd(port, { "PING" })
                            return r == "PONG" or type(r) == "table"
                          end })
      t.procs[#t.procs + 1] = s
      t.sentinels[i] = s
      t.sentinel_endpoints[i] = "127.0.0.1:" .. port
    end
    wait_until(function()
      for _, s in ipairs(t.sentinels) do
        local m = S.fields(S.cmd(s.port, { "SENTINEL", "MASTER", t.name },
                                 t.sentinel_password))
        if tonumber(m["num-slaves"]) ~= 1
           or tonumber(m["num-other-sentinels"]) ~= 2 then
          return false
        end
      end
      return true
    end, 20, "every Sentinel to know the replica and the other two")
  end)
  if not ok then
    t:close()
    error(err, 2)
  end
  return t
end

return S
