-- redis-server for the specs, on a free loopback port: a throwaway one
-- (R.start, nothing saved to disk) and one under the specs' control
-- (R.launch: killed, frozen, restarted with its data).
local socket = require "socket"
local P = require "spec.helpers.process"

local R = {}

--- A port nobody listens on now, for a server to bind: below Linux's
-- ephemeral range (32768 and up), so that no outgoing connection (another
-- test's, or a pool reconnecting to itself while the server is down) is
-- handed it before the server binds it again after a restart.
local seeded = false
function R.free_port()
  if not seeded then
    -- LuaJIT and 5.1 start every process on the same sequence: two
    -- specs run side by side would try the same ports in the same order.
    math.randomseed(math.floor(socket.gettime() % 1000 * 1e6))
    seeded = true
  end
  for _ = 1, 200 do
    local port = math.random(20000, 32000)
    local s = socket.bind("127.0.0.1", port)
    if s then
      s:close()
      return port
    end
  end
  error("no free port below the ephemeral range")
end

function R.installed()
  local ok = os.execute("command -v redis-server >/dev/null 2>&1")
  return ok == true or ok == 0
end

--- One PING on a fresh connection: false while refused, loading or
-- frozen.
function R.ping(port)
  local c = socket.tcp()
  c:settimeout(0.2)
  if not c:connect("127.0.0.1", port) then c:close(); return false end
  c:send("PING\r\n")
  local line = c:receive("*l")
  c:close()
  return line == "+PONG"
end

--- redis-server {port, args...} started through P.start: returns once it
-- answers PING (the server object: proc, port, endpoint, kill, restart,
-- close), or raises with what it printed. Its log goes to the file log.
function R.launch(port, args, log)
  -- A directory of its own (args may name another): a master feeding a
  -- replica writes dump.rdb there, and a server started where one lies
  -- loads it; neither belongs in the test's working directory.
  local dir = os.tmpname()
  os.remove(dir)
  os.execute("mkdir -p " .. dir)
  local argv = { "redis-server", "--port", port, "--bind", "127.0.0.1",
                 "--save", "", "--daemonize", "no", "--dir", dir,
                 stdout = log }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return P.start(P.external(argv), { port = port, tmpdir = dir,
                         ready = function() return R.ping(port) end })
end

--- Starts a throwaway redis-server, detached from the loop; returns a
-- handle {port, endpoint, pid} or nil, why. Not through R.launch: a child
-- of resilnet.process keeps resilnet.run() from returning while it runs,
-- and redis_spec checks that run() returns with only idle connections
-- left.
function R.start()
  if not R.installed() then return nil, "redis-server not installed" end
  local port = R.free_port()
  local dir = os.tmpname()
  os.remove(dir)
  local pidfile = dir .. ".pid"
  local cmd = ("redis-server --port %d --bind 127.0.0.1 --save '' "
    .. "--appendonly no --daemonize no --dir /tmp "
    .. ">%s.log 2>&1 & echo $! >%s"):format(port, dir, pidfile)
  os.execute(P.external(cmd))
  local f = io.open(pidfile)
  local pid = f and tonumber(f:read("*l"))
  if f then f:close() end
  os.remove(pidfile)
  if not pid then return nil, "could not start redis-server" end
  local handle = { port = port, endpoint = "127.0.0.1:" .. port, pid = pid,
                   log = dir .. ".log" }
  for _ = 1, 250 do -- up to 5 s
    if R.ping(port) then return handle end
    socket.sleep(0.02)
  end
  R.stop(handle)
  return nil, "redis-server did not become ready"
end

function R.stop(handle)
  os.execute("kill " .. handle.pid .. " 2>/dev/null")
  for _ = 1, 250 do
    local alive = os.execute("kill -0 " .. handle.pid .. " 2>/dev/null")
    if not (alive == true or alive == 0) then break end
    socket.sleep(0.02)
  end
  os.remove(handle.log)
end

--- describe(name, ...) against a throwaway redis-server started now:
-- stopped at teardown, descriptors checked around each case. body(redis)
-- declares the cases. make test installs redis-server: its absence is a
-- failure, not a skip.
function R.describe_server(name, body)
  local H = require "spec.helpers.util"
  -- busted's functions are globals of spec files only: its module has them
  local busted = require "busted"
  local redis, why = R.start()
  busted.describe(name, function()
    if not redis then
      busted.it("starts a redis-server", function() error(why) end)
      return
    end
    busted.teardown(function() R.stop(redis) end)
    busted.before_each(H.fd_watch)
    busted.after_each(H.cleanup_checking_fds)
    body(redis)
  end)
end

--- R.describe_server, and before each case a fresh pool on the server
-- (timeout 5 s, after FLUSHALL) handed to set_pool.
function R.describe(name, set_pool, body)
  local H = require "spec.helpers.util"
  local busted = require "busted"
  R.describe_server(name, function(redis)
    busted.before_each(function()
      local pool = H.pool { endpoints = { redis.endpoint }, timeout = 5 }
      local ok, err = pool:call { "FLUSHALL" }
      assert(ok == "OK", "FLUSHALL: " .. tostring(err and err.message))
      set_pool(pool)
    end)
    body(redis)
  end)
end

return R
