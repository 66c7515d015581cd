-- The server's role and its load state against real redis-servers (issue
-- 18, items 2 and 3): role = "master" never writes to a replica (ROLE at
-- connect); a replica promoted behind the addresses discovery returns
-- (REPLICAOF NO ONE, then REPLICAOF on the old master, as a managed
-- service does) stops writes to the old master at its first -READONLY and
-- finds the new one through discovery, no caller seeing READONLY; a
-- restarted Redis loading a big dataset makes calls wait, not fail.
local resilnet = require "resilnet"
local socket = require "socket"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"

-- One command on a fresh socket (inline), its first reply line.
local function raw(port, command, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 2)
  assert(c:connect("127.0.0.1", port))
  c:send(command .. "\r\n")
  local line = c:receive("*l")
  c:close()
  return line
end

-- Waits (from a task) until the replica at port has synced.
local function await_link(port)
  for _ = 1, 500 do
    local c = socket.tcp()
    c:settimeout(1)
    c:connect("127.0.0.1", port)
    c:send("INFO replication\r\n")
    local head = c:receive("*l")
    local n = tonumber(head and head:match("^%$(%d+)")) or 0
    local body = n > 0 and c:receive(n + 2) or ""
    c:close()
    if body:find("master_link_status:up", 1, true) then return end
    resilnet.sleep(0.02)
  end
  error("replica at " .. port .. " did not sync")
end

-- A directory for the servers of the describe it is called in: made at
-- setup, removed at teardown; dir.path names it.
local function describe_dir()
  local dir = {}
  setup(function()
    dir.path = os.tmpname()
    os.remove(dir.path)
    os.execute("mkdir " .. dir.path)
  end)
  teardown(function() os.execute("rm -rf " .. dir.path) end)
  return dir
end

describe("role against a real master and replica", function()
  if not R.installed() then
    it("starts a redis-server", function() error("redis-server not installed") end)
    return
  end
  local a, b
  local dir = describe_dir()
  before_each(function()
    H.fd_watch()
    H.go(function()
      local pa, pb = R.free_port(), R.free_port()
      a = R.launch(pa, {}, dir.path .. "/a.log")
      b = R.launch(pb, { "--replicaof", "127.0.0.1", tostring(pa) },
                   dir.path .. "/b.log")
      await_link(pb)
    end)
  end)
  after_each(function()
    if a then a:close() end
    if b then b:close() end
    H.cleanup_checking_fds()
  end)

  it("role = 'master' connects only to the master, 'replica' only to the "
     .. "replica: a wrong role is a failed connect (wrong_role)", function()
    H.go(function()
      local seen = {}
      local to_replica = H.pool { endpoints = { b.endpoint }, role = "master",
                                  timeout = 0.5,
                                  reconnect = { initial = 0.05, max = 0.2 } }
      to_replica:on("wrong_role", function(ev) seen[#seen + 1] = ev end)
      local n, err = to_replica:call { "INCR", "x" }
      assert.is_nil(n)
      assert.equal("EROLE", err.code)
      assert.is_false(err.maybe_executed)
      assert.is_truthy(err.message:find("slave", 1, true), err.message)
      assert.is_true(#seen >= 1)
      assert.equal("role", seen[1].reason)
      assert.equal(b.endpoint, seen[1].endpoint)
      assert.is_true(to_replica:stats().wrong_role >= 1)
      local s = to_replica:stats()
      -- Backoff (50 ms growing to 200 ms), not a connect per loop turn.
      assert.is_true(s.connect_failures <= 10, s.connect_failures .. " connects")
      to_replica:close()

      local reader = H.pool { endpoints = { a.endpoint, b.endpoint },
                              role = "replica", timeout = 2 }
      for _ = 1, 20 do
        local role = assert(reader:call { "ROLE" })
        assert.equal("slave", role[1])
      end
      reader:close()

      local writer = H.pool { endpoints = { b.endpoint, a.endpoint },
                              role = "master", timeout = 5 }
      for i = 1, 50 do
        assert.equal(i, assert(writer:call { "INCR", "w" }))
      end
      assert.is_true(writer:stats().wrong_role >= 1)
      writer:close()
    end, 60)
  end)

  it("a replica promoted behind discovery: writes stop going to the old "
     .. "master at its first READONLY, no caller sees it", function()
    H.go(function()
      local current = a.endpoint
      local readonly, resolves, failures = 0, 0, {}
      local pool = H.pool { endpoints = function() return { current } end,
                            role = "master", size = 4, timeout = 5,
                            reconnect = { initial = 0.02, max = 0.2 } }
      pool:on("wrong_role", function(ev)
        if ev.reason == "readonly" then readonly = readonly + 1 end
      end)
      pool:on("resolve", function(ev)
        if ev.reason == "wrong_role" then resolves = resolves + 1 end
      end)
      local stop, running, ok = false, 8, 0
      -- Writes begun once both servers had switched, and acknowledged:
      -- a refuses them (READONLY), so they can only have run on b. (One
      -- begun before, acknowledged by a just before its demotion but read
      -- after, is in a's old data, which the resync from b replaced.)
      local switched, ok_after = false, 0
      for t = 1, 8 do
        resilnet.spawn(function()
          for i = 1, 100000 do
            if stop then break end
            local after = switched
            local n, err = pool:call { "RPUSH", "ids", t .. ":" .. i }
            if n then
              ok = ok + 1
              if after then ok_after = ok_after + 1 end
            else failures[#failures + 1] = err.code .. " " .. err.message end
            resilnet.sleep(0.002)
          end
          running = running - 1
        end)
      end
      for _ = 1, 500 do
        if ok >= 200 then break end
        resilnet.sleep(0.01)
      end
      -- The managed service's failover: discovery will name b, b is
      -- promoted, then a follows it.
      current = b.endpoint
      assert.equal("+OK", raw(b.port, "REPLICAOF NO ONE"))
      assert.equal("+OK", raw(a.port, "REPLICAOF 127.0.0.1 " .. b.port))
      local at_switch = ok
      switched = true
      for _ = 1, 500 do
        if ok >= at_switch + 300 then break end
        resilnet.sleep(0.01)
      end
      stop = true
      for _ = 1, 500 do
        if running == 0 then break end
        resilnet.sleep(0.01)
      end
      assert.equal(0, running)
      assert.same({}, failures)
      assert.is_true(ok >= at_switch + 300, "writes did not resume")
      assert.equal(1, readonly, "READONLY acted on once per server change")
      assert.is_true(resolves >= 1, "discovery was not asked")
      local s = pool:stats()
      assert.equal(0, s.failed)
      -- Only the writes in flight when it was demoted (one per task) met
      -- READONLY: none was written to it after the first.
      assert.is_true(s.not_executed <= 8, s.not_executed .. " READONLYs")
      print(("\n[redis role] %d writes, %d wrong_role events (readonly %d), "
             .. "not_executed %d, connects %d"):format(ok, s.wrong_role,
            readonly, s.not_executed, s.connects))
      -- Everything begun after the switch went to b: the old master
      -- follows it now, so both hold b's list.
      local len_b = tonumber(raw(b.port, "LLEN ids"):match("%d+"))
      assert.is_true(ok_after >= 200, "writes begun after the switch: "
                     .. ok_after)
      assert.is_true(len_b >= ok_after, len_b .. " < " .. ok_after)
      pool:close()
    end, 90)
  end)
end)

describe("LOADING: a restarted redis-server loading a big dataset", function()
  if not R.installed() then return end
  local dir = describe_dir()

  it("calls wait and succeed while the deadline allows", function()
    H.fd_watch()
    local redis
    local ok, err = pcall(H.go, function()
      local port = R.free_port()
      redis = R.launch(port, { "--dir", dir.path, "--enable-debug-command",
                               "yes" }, dir.path .. "/log.txt")
      assert.equal("+OK", raw(port, "DEBUG POPULATE 2000000 k 64", 60))
      assert.equal("+OK", raw(port, "SET before 1"))
      assert.equal("+OK", raw(port, "SAVE", 60))
      local pool = H.pool { endpoints = { redis.endpoint }, timeout = 60,
                            reconnect = { initial = 0.02, max = 0.25 } }
      assert.equal("1", pool:call { "GET", "before" })
      local done, failures, succeeded, during = false, {}, 0, 0
      for t = 1, 4 do
        resilnet.spawn(function()
          for i = 1, 100000 do
            if done then break end
            -- Idempotent: the SIGKILL itself fails nothing it catches in
            -- flight (a retry waits for the server like any new call).
            local t0 = resilnet.now()
            local n, e = pool:call({ "GET", "before" }, { idempotent = true })
            if n == "1" then
              succeeded = succeeded + 1
              -- It waited out the restart and the load, and got its answer.
              if resilnet.now() - t0 > 1 then during = during + 1 end
            else
              failures[#failures + 1] = e and (e.code .. " " .. e.message)
                                        or tostring(n)
            end
            resilnet.sleep(0.005)
          end
        end)
      end
      resilnet.sleep(0.2)
      local t0 = resilnet.now()
      redis:restart() -- returns once it answers PING: loaded
      local loading_for = resilnet.now() - t0
      resilnet.sleep(0.3)
      done = true
      resilnet.sleep(0.1)
      local s = pool:stats()
      print(("\n[redis loading] restart and load took %.2f s; %d calls "
             .. "succeeded (%d of them waited over 1 s); loading seen %d "
             .. "times, connect_failures %d"):format(loading_for, succeeded,
            during, s.loading, s.connect_failures))
      assert.same({}, failures)
      assert.is_true(s.loading >= 1, "the server was never seen loading")
      assert.is_true(during >= 1, "no call completed across the restart")
      assert.equal("1", pool:call { "GET", "before" })
      pool:close()
    end, 180)
    if redis then redis:close() end
    H.cleanup_checking_fds()
    if not ok then error(err, 0) end
  end)
end)
