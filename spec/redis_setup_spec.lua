-- Connection setup against a real password-protected redis-server (issue
-- 18, item 1): AUTH (and SELECT, CLIENT SETNAME) on every new connection,
-- before it takes calls, also after the server was killed and restarted;
-- a wrong password is a configuration fault (the server's error, never
-- executed, connects at the backoff's bound), and the password is never
-- in an error, an event or the stats.
local resilnet = require "resilnet"
local socket = require "socket"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"
local P = require "spec.helpers.process"

local PASSWORD = "s3cret-pw-7f1d"

-- AUTH then PING on a fresh socket: true once the server serves.
local function ready_with(port, password)
  local c = socket.tcp()
  c:settimeout(0.2)
  if not c:connect("127.0.0.1", port) then c:close(); return false end
  c:send(("AUTH %s\r\nPING\r\n"):format(password))
  local auth = c:receive("*l")
  local pong = c:receive("*l")
  c:close()
  return auth == "+OK" and pong == "+PONG"
end

local function launch(port, dir)
  return P.start({ "redis-server", "--port", port, "--bind", "127.0.0.1",
                   "--requirepass", PASSWORD, "--save", "",
                   "--appendonly", "yes", "--dir", dir,
                   "--daemonize", "no", stdout = dir .. "/log.txt" },
                 { port = port,
                   ready = function() return ready_with(port, PASSWORD) end })
end

-- What redis-cli says (the check that does not go through resilnet).
local function cli(port, args)
  local f = io.popen(("redis-cli -p %d -a %s --no-auth-warning %s 2>&1")
                     :format(port, PASSWORD, args))
  local out = f:read("*a")
  f:close()
  return (out:gsub("%s+$", ""))
end

-- Every value an event or the stats carry, as one string.
local function flatten(t, out)
  out = out or {}
  for k, v in pairs(t) do
    if type(v) == "table" then flatten(v, out)
    else out[#out + 1] = tostring(k) .. "=" .. tostring(v) end
  end
  return out
end

describe("connection setup against redis-server --requirepass", function()
  if not R.installed() then
    it("starts a redis-server", function() error("redis-server not installed") end)
    return
  end
  local port, dir, redis
  setup(function()
    port = R.free_port()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir " .. dir)
    H.go(function() redis = launch(port, dir) end)
  end)
  teardown(function()
    if redis then redis:close() end
    os.execute("rm -rf " .. dir)
  end)
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  -- 20 tasks x 20 INCRs; returns the failures' codes.
  local function incr_burst(pool, key)
    local failures, left = {}, 20
    for _ = 1, 20 do
      resilnet.spawn(function()
        for _ = 1, 20 do
          local n, err = pool:call { "INCR", key }
          if n == nil then failures[#failures + 1] = err.code .. " " .. err.message end
        end
        left = left - 1
      end)
    end
    for _ = 1, 2000 do
      if left == 0 then break end
      resilnet.sleep(0.01)
    end
    assert.equal(0, left, "tasks did not finish")
    return failures
  end

  it("AUTH on every connection: 20 tasks x 20 INCRs, then twice SIGKILL "
     .. "and restart under idle connections, 0 failures", function()
    H.go(function()
      local pool = H.pool { endpoints = { "127.0.0.1:" .. port },
                            password = PASSWORD, size = 8, timeout = 10,
                            reconnect = { initial = 0.05, max = 0.5 } }
      assert.same({}, incr_burst(pool, "counter"))
      assert.equal("400", cli(port, "GET counter"))
      local opened = pool:stats().connects
      assert.is_true(opened >= 2, "only " .. opened .. " connections")
      for round = 1, 2 do
        -- The pool's connections sit idle, authenticated, when the server
        -- dies; the new server knows none of them.
        redis:restart()
        assert.same({}, incr_burst(pool, "counter"), "round " .. round)
        assert.equal(tostring(400 * (round + 1)), cli(port, "GET counter"))
      end
      local s = pool:stats()
      assert.is_true(s.connects > opened, "no new connection after restarts")
      assert.equal(0, s.setup_failures)
      pool:close()
    end, 90)
  end)

  it("a wrong password fails within connect_timeout with the server's "
     .. "error, never executed, connects at the backoff's bound", function()
    H.go(function()
      local events, connects = {}, 0
      local pool = H.pool { endpoints = { "127.0.0.1:" .. port },
                            password = "wrong-" .. PASSWORD, timeout = 6,
                            connect_timeout = 1,
                            reconnect = { initial = 0.05, max = 1 } }
      for _, name in ipairs { "state", "eject", "resolve" } do
        pool:on(name, function(ev)
          events[#events + 1] = ev
          if ev.state == "connecting" and ev.connection then
            connects = connects + 1
          end
        end)
      end
      local t0 = resilnet.now()
      local n, err = pool:call { "INCR", "never" }
      local took = resilnet.now() - t0
      assert.is_nil(n)
      assert.equal("EAUTH", err.code)
      assert.is_truthy(err.message:find("WRONGPASS", 1, true), err.message)
      assert.is_false(err.maybe_executed)
      assert.is_true(took < 1 + 0.5, ("failed after %.2f s"):format(took))
      -- Calls keep failing at once while the endpoint waits out its
      -- longest backoff; connects stay at that bound.
      local t1 = resilnet.now()
      local before = connects
      while resilnet.now() - t1 < 5 do
        local _, e = pool:call { "INCR", "never" }
        assert.equal("EAUTH", e.code)
        resilnet.sleep(0.05)
      end
      local made = connects - before
      assert.is_true(made <= 7, made .. " connects in 5 s (bound: 1 s apart)")
      assert.is_true(made >= 3, made .. " connects in 5 s: gave up?")
      local s = pool:stats()
      assert.is_true(s.setup_failures >= made)
      for _, text in ipairs(flatten(events)) do
        assert.is_nil(text:find(PASSWORD, 1, true), "password in an event")
      end
      for _, text in ipairs(flatten(s)) do
        assert.is_nil(text:find(PASSWORD, 1, true), "password in stats")
      end
      assert.is_nil(err.message:find(PASSWORD, 1, true))
      assert.equal("0", cli(port, "EXISTS never"))
      pool:close()
    end, 30)
  end)

  it("database = 2 and setup = {{'SELECT', 2}}: every call on every "
     .. "connection lands in db 2, also after a restart", function()
    H.go(function()
      cli(port, "-n 2 DEL d2")
      local by_option = H.pool { endpoints = { "127.0.0.1:" .. port },
                                 password = PASSWORD, database = 2, size = 8,
                                 timeout = 10, client_name = "setup-spec",
                                 reconnect = { initial = 0.05, max = 0.5 } }
      local by_setup = H.pool { endpoints = { "127.0.0.1:" .. port },
                                setup = { { "AUTH", PASSWORD },
                                          { "SELECT", 2 } },
                                size = 8, timeout = 10,
                                reconnect = { initial = 0.05, max = 0.5 } }
      assert.same({}, incr_burst(by_option, "d2"))
      assert.same({}, incr_burst(by_setup, "d2"))
      assert.equal("800", cli(port, "-n 2 GET d2"))
      assert.equal("0", cli(port, "-n 0 EXISTS d2"))
      assert.equal("setup-spec", by_option:call { "CLIENT", "GETNAME" })
      -- A name Redis would refuse fails when the pool is made, not at
      -- every connect.
      local ok, err = pcall(resilnet.pool, {
        endpoints = { "127.0.0.1:" .. port }, password = PASSWORD,
        client_name = "setup spec" })
      assert.is_false(ok)
      assert.matches("client_name with a space", err, 1, true)
      redis:restart()
      assert.same({}, incr_burst(by_option, "d2"))
      assert.equal("1200", cli(port, "-n 2 GET d2"))
      assert.equal("0", cli(port, "-n 0 EXISTS d2"))
      by_option:close()
      by_setup:close()
    end, 90)
  end)

  it("names a bad setup option", function()
    assert.has_error(function()
      resilnet.pool { endpoints = { "127.0.0.1:1" }, setup = { "PING" } }
    end)
    assert.has_error(function()
      resilnet.pool { endpoints = { "127.0.0.1:1" }, setup = { {} } }
    end, nil)
    local ok, e = pcall(resilnet.pool, { endpoints = { "127.0.0.1:1" },
                                          protocol = "line",
                                          setup = { { "A", "B" } } })
    assert.is_false(ok)
    assert.is_truthy(tostring(e):find("setup", 1, true), tostring(e))
    ok, e = pcall(resilnet.pool, { endpoints = { "127.0.0.1:1" },
                                   role = "primary" })
    assert.is_false(ok)
    assert.is_truthy(tostring(e):find("role", 1, true), tostring(e))
  end)
end)

describe("connection setup on line and rnp (request bodies)", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  for _, protocol in ipairs { "line", "rnp" } do
    it(protocol .. ": every connection sends its setup before any call; "
       .. "(rnp) an error reply to it is ESETUP with the server's text",
       function()
      local log = {}
      local _, ep = H.server {
        protocol = protocol,
        handler = function(req)
          log[#log + 1] = req
          if req == "bad-setup" then error("no such setup", 0) end
          return "ok:" .. req
        end,
      }
      local pool = H.pool { endpoints = { ep }, protocol = protocol,
                            size = 1, setup = { "hello", "world" } }
      assert.equal("ok:a", pool:call("a"))
      assert.equal("ok:b", pool:call("b"))
      assert.same({ "hello", "world", "a", "b" }, log)
      pool:close()
      -- (A line server has no error reply: a failing handler closes.)
      if protocol == "line" then return end

      local bad = H.pool { endpoints = { ep }, protocol = protocol,
                           timeout = 0.3, setup = { "bad-setup" } }
      local r, err = bad:call("c")
      assert.is_nil(r)
      assert.equal("ESETUP", err.code)
      assert.is_false(err.maybe_executed)
      assert.is_truthy(err.message:find("no such setup", 1, true),
                       err.message)
      for _, seen in ipairs(log) do assert.not_equal("c", seen) end
      assert.is_true(bad:stats().setup_failures >= 1)
      bad:close()
    end)
  end
end)
