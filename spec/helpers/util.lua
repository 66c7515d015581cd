-- Shared helpers for the busted specs: echo servers, refused ports,
-- running a body as a task, cleaning up whatever a test opened, and
-- checking that a scenario gives back every file descriptor it took.
local resilnet = require "resilnet"
local luassert = require "luassert"

local H = {}

local opened = {}

--- Remembers an object with a :close() so H.cleanup() closes it.
function H.track(obj)
  opened[#opened + 1] = obj
  return obj
end

--- Closes everything tracked (after_each). Errors left behind by a
-- failed test (recorded task errors) are swallowed so that the next test
-- starts clean; the failure was already reported.
function H.cleanup()
  for i = #opened, 1, -1 do
    local obj = opened[i]
    opened[i] = nil
    for _ = 1, 3 do
      if pcall(obj.close, obj) then break end
    end
  end
end

--- A server for protocol with handler (default: echo), tracked.
-- Returns the server and its "host:port".
function H.server(opts)
  opts.listen = opts.listen or "127.0.0.1:0"
  opts.handler = opts.handler or function(request) return request end
  local srv = assert(resilnet.server(opts))
  H.track(srv)
  local host, port = srv:address()
  return srv, host .. ":" .. port
end

--- A pool, tracked.
function H.pool(opts)
  return H.track(resilnet.pool(opts))
end

--- An endpoint where nothing listens: a port that was just bound and
-- released. Below Linux's ephemeral range (32768 and up): a port from that
-- range may be handed to another test's connection meanwhile, or to one
-- of the pool's own reconnects, which on loopback then connects to itself
-- (seen once in CI: EOF instead of ECONNREFUSED).
function H.refused_endpoint()
  for _ = 1, 100 do
    local port = math.random(20000, 32000)
    local srv = resilnet.server { listen = "127.0.0.1:" .. port,
                                  handler = function() end }
    if srv then
      srv:close()
      return "127.0.0.1:" .. port
    end
  end
  error("no free port below the ephemeral range")
end

--- Runs fn as a task and drives the loop until it has finished; errors in
-- it (or in any other task or callback) are raised here. Servers keep the
-- loop alive, so this waits for the task rather than for the loop.
function H.go(fn, timeout)
  local done = false
  resilnet.spawn(function()
    fn()
    done = true
  end)
  local deadline = resilnet.now() + (timeout or 30)
  while not done do
    if resilnet.now() > deadline then
      error("H.go: the task did not finish in time", 2)
    end
    -- A waiting function outside any task runs the loop one turn.
    resilnet.sleep(0)
  end
end

--- H.calls_at_once(pool, n) -> replies: n tasks call pool at once, task
-- i with "r<i>", its reply (nil if it failed) at replies[i]; run by H.go.
function H.calls_at_once(pool, n)
  local replies = {}
  H.go(function()
    local left = n
    for i = 1, n do
      resilnet.spawn(function()
        replies[i] = pool:call("r" .. i)
        left = left - 1
      end)
    end
    while left > 0 do resilnet.sleep(0.001) end
  end)
  return replies
end

--- H.workers(n, work, meanwhile): n tasks each run work(w, i) for i = 1,
-- 2, ... (w, the task's number) until meanwhile(), run as a task of its
-- own, has returned; then each ends after its call in progress, waited for
-- (10 s at most). All within H.go, timeout seconds (60).
function H.workers(n, work, meanwhile, timeout)
  local stop, running = false, 0
  H.go(function()
    for w = 1, n do
      resilnet.spawn(function()
        running = running + 1
        local i = 0
        while not stop do
          i = i + 1
          work(w, i)
        end
        running = running - 1
      end)
    end
    meanwhile()
    stop = true
    for _ = 1, 1000 do
      if running == 0 then break end
      resilnet.sleep(0.01)
    end
    luassert.equal(0, running)
  end, timeout or 60)
end

--- How late the loop itself runs timers, for bounds on how late something
-- ends past its due time: on a loaded machine the whole process waits for
-- a core now and then (20 ms and more with six busy processes on two
-- cores), which delays a deadline no less than a bug would. A task sleeping
-- 5 ms again and again records its worst overshoot, in seconds, in
-- probe.worst until probe.running is set false (it then ends within 5 ms).
-- A bound is "due + tolerance + probe.worst", with the probe running over
-- the whole time measured.
function H.lateness_probe()
  local probe = { worst = 0, running = true }
  resilnet.spawn(function()
    while probe.running do
      local t0 = resilnet.now()
      resilnet.sleep(0.005)
      local late = resilnet.now() - t0 - 0.005
      if late > probe.worst then probe.worst = late end
    end
  end)
  return probe
end

--- A raw TCP peer (LuaSocket, loopback, port 0) driven from a resilnet
-- task: on every chunk a connection receives, respond(chunk, n) (n counts
-- the connection's chunks) returns the bytes to write back, or false to
-- close that connection. Returns the peer ("host:port" in peer.endpoint);
-- peer:close() (tracked) stops it. Polls every 2 ms while open: LuaSocket
-- cannot join the resilnet loop, and the poll keeps each test bounded.
function H.raw_peer(respond)
  local socket = require "socket"
  local listener = assert(socket.bind("127.0.0.1", 0))
  listener:settimeout(0)
  local host, port = listener:getsockname()
  local peer = { endpoint = host .. ":" .. port, received = {} }
  local open = true
  local conns = {}
  -- Closes the sockets at once rather than when the polling task next
  -- wakes, so that a scenario's descriptors are back when cleanup returns.
  function peer.close()
    if not open then return end
    open = false
    for _, conn in ipairs(conns) do conn.sock:close() end
    conns = {}
    listener:close()
  end
  local function serve()
    while open do
      local c = listener:accept()
      if c then
        c:settimeout(0)
        conns[#conns + 1] = { sock = c, n = 0 }
      end
      for i = #conns, 1, -1 do
        local conn = conns[i]
        local data, err, partial = conn.sock:receive(65536)
        data = data or partial
        if data and #data > 0 then
          conn.n = conn.n + 1
          peer.received[#peer.received + 1] = data
          local out = respond(data, conn.n)
          if not open then return end -- respond closed the peer
          if out then
            conn.sock:send(out)
          else
            err = "closed"
          end
        end
        if err == "closed" then
          conn.sock:close()
          table.remove(conns, i)
        end
      end
      resilnet.sleep(0.002)
    end
  end
  resilnet.spawn(serve)
  return H.track(peer)
end

---------------------------------------------------------------------------
-- File descriptors. A scenario must give back every descriptor it took
-- once its pools and servers are closed:
--
--   local fds = H.fd_baseline()
--   ... scenario ...; pool:close(); srv:close()
--   H.assert_fds(fds)
--
-- or, for every test of a describe block:
--   before_each(H.fd_watch); after_each(H.cleanup_checking_fds)

local function succeeded(ok) return ok == true or ok == 0 end

local self_pid

-- This process's id. Read by this process, /proc/self is us; in a child
-- (a shell running ls) it would be the child.
local function pid()
  if not self_pid then
    local f = assert(io.open("/proc/self/stat"))
    self_pid = tonumber(f:read("*l"):match("^(%d+)"))
    f:close()
  end
  return self_pid
end

--- Returns the number of file descriptors open in this process, and a
-- table fd -> what it refers to ("socket:[123]", "pipe:[45]", a path).
-- A shell child lists /proc/<pid>/fd into a temporary file that this
-- process opens only once the child has exited, so nothing of this
-- function's own is open while the directory is read (io.popen would
-- count its pipe, and a race-prone write end), and all of it is closed
-- when it returns: two calls in a row agree.
function H.open_fds()
  local out = os.tmpname()
  local ok = os.execute(("LC_ALL=C ls -l /proc/%d/fd >%s 2>&1")
                        :format(pid(), out))
  local f = assert(io.open(out))
  local text = f:read("*a")
  f:close()
  os.remove(out)
  assert(succeeded(ok), "cannot list /proc/" .. pid() .. "/fd: " .. text)
  local count, fds = 0, {}
  for fd, what in text:gmatch("(%d+) %-> ([^\n]*)") do
    count = count + 1
    fds[tonumber(fd)] = what
  end
  return count, fds
end

-- Lets closes that finish in a loop turn finish, and garbage (pools and
-- servers a test dropped) be collected and closed.
local function settle()
  for _ = 1, 2 do
    collectgarbage()
    collectgarbage()
    resilnet.sleep(0)
  end
end

--- The starting point of an fd check: {count, fds}. libuv keeps a few
-- descriptors per loop for the loop's whole life: the epoll fd, the
-- signal pipe and the async eventfd (made with the loop, when resilnet is
-- required), and a /dev/null it holds in reserve for accept() running out
-- of descriptors (made when the loop's first TCP handle is). The warm-up
-- here (a loop turn, and a listener opened and closed) makes sure they
-- all exist before counting, so they are never mistaken for a scenario's.
function H.fd_baseline()
  H.refused_endpoint()
  settle()
  local count, fds = H.open_fds()
  return { count = count, fds = fds }
end

--- Asserts that the process has as many descriptors open as at base,
-- naming those that came and went if not. Close pools and servers first.
function H.assert_fds(base)
  settle()
  local count, fds = H.open_fds()
  local changed = {}
  for fd, what in pairs(fds) do
    if base.fds[fd] ~= what then changed[#changed + 1] = fd end
  end
  for fd, what in pairs(base.fds) do
    if fds[fd] ~= what and not fds[fd] then changed[#changed + 1] = fd end
  end
  table.sort(changed)
  local diff = {}
  for _, fd in ipairs(changed) do
    if base.fds[fd] then
      diff[#diff + 1] = ("  - %d -> %s"):format(fd, base.fds[fd])
    end
    if fds[fd] then diff[#diff + 1] = ("  + %d -> %s"):format(fd, fds[fd]) end
  end
  if #diff > 20 then -- a pool left open may hold a thousand
    local more = #diff - 20
    for i = #diff, 21, -1 do diff[i] = nil end
    diff[21] = ("  ... and %d more"):format(more)
  end
  luassert.equal(base.count, count,
                 ("%sfile descriptors: %d at the start, %d after the "
                  .. "scenario closed everything\n%s")
                   :format(base.name and base.name .. ": " or "", base.count,
                           count, table.concat(diff, "\n")))
end

--- Runs fn, closes everything tracked, and asserts that the process is
-- back to the descriptors it had before fn.
function H.assert_no_fd_leak(fn)
  local base = H.fd_baseline()
  fn()
  H.cleanup()
  H.assert_fds(base)
end

local watched, current_test

-- busted reports a failed after_each under the describe block's name
-- only: remember which test ran, to name it in the fd check's message.
local ok_busted, busted = pcall(require, "busted")
if ok_busted and type(busted) == "table" and busted.subscribe then
  busted.subscribe({ "test", "start" }, function(element, parent)
    current_test = ((parent and parent.name or "") .. " "
                    .. (element.name or "")):gsub("^ ", "")
    return nil, true
  end)
end

--- before_each: records the baseline that cleanup_checking_fds checks.
function H.fd_watch()
  watched = H.fd_baseline()
end

--- after_each: H.cleanup(), then the fd check against H.fd_watch's
-- baseline.
function H.cleanup_checking_fds()
  H.cleanup()
  local base = watched
  watched = nil
  if base then
    base.name = current_test -- set once the test started, after before_each
    H.assert_fds(base)
  end
end

--- The source tree's root, with a trailing slash (from this file's path).
function H.source_dir()
  local src = debug.getinfo(1, "S").source
  return src:match("^@(.*)spec/helpers/[^/]*$") or "./"
end

--- A file's whole contents; raises if it cannot be read.
function H.read_file(path)
  local f = assert(io.open(path, "rb"))
  local text = f:read("*a")
  f:close()
  return text
end

return H
