-- Hostile review of batches, transactions, held connections and setup
-- options (issue 19's newest surface, issue 18's setup) against a real
-- redis-server: what a user of redis-py or ioredis would try, and what
-- must not leak from one user of a pooled connection to the next. Each
-- case is named after the defect it found.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"

local pool
R.describe("hostile batches and transactions on redis-server",
           function(p) pool = p end, function(redis)
  -- A one-connection pool, so that a poisoned connection would be the one
  -- every later call meets.
  local function single()
    return H.pool { endpoints = { redis.endpoint }, timeout = 5, size = 1 }
  end

  it("a batch leaving MULTI open is refused, not left to queue others' calls",
     function()
    local p = single()
    for _, bad in ipairs {
      { { "MULTI" }, { "SET", "k", "1" } },
      { { "WATCH", "k" }, { "GET", "k" } },
      { { "SUBSCRIBE", "ch" } },
      { { "select", "3" } },
      { { "AUTH", "default", "x" } },
      { { "CLIENT", "REPLY", "OFF" } },
      { { "MULTI" }, { "EXEC" }, { "MULTI" } },
    } do
      assert.has_error(function() p:batch(bad) end)
      -- The callback form is refused the same way.
      assert.has_error(function() p:batch(bad, function() end) end)
    end
    -- Nothing reached the connection: a later call meets it as it was.
    assert.equal("OK", p:call { "SET", "k", "v" })
    assert.equal("v", p:call { "GET", "k" })
    -- What leaves it as it found it still goes.
    local r = assert(p:batch { { "MULTI" }, { "INCR", "n" }, { "EXEC" },
                               { "WATCH", "k" }, { "UNWATCH" } })
    assert.same({ 1 }, r[3])
    assert.equal("OK", r[5])
    assert.equal(1, tonumber(p:call { "GET", "n" }))
  end)

  it("a single pool:call of MULTI (WATCH, SUBSCRIBE, SELECT, AUTH, ...) is "
     .. "refused, not left to change the pooled connection for every later "
     .. "call there", function()
    local p = single()
    for _, bad in ipairs {
      { "MULTI" }, { "watch", "k" }, { "SUBSCRIBE", "ch" }, { "MONITOR" },
      { "SELECT", "3" }, { "AUTH", "default", "x" }, { "HELLO", "3" },
      { "RESET" }, { "READONLY" }, { "client", "setname", "x" },
      { "CLIENT", "REPLY", "OFF" }, { "CLIENT", "TRACKING", "on" },
    } do
      local ok, err = pcall(p.call, p, bad)
      assert.is_false(ok, bad[1])
      assert.matches("would leave its pooled connection changed", err)
      assert.has_error(function() p:send(bad, function() end) end)
    end
    -- Nothing reached the connection: a later call meets it as it was.
    assert.equal("OK", p:call { "SET", "k", "v" })
    assert.equal("v", p:call { "GET", "k" })
    assert.equal("v", pool:call { "GET", "k" }) -- still database 0
    -- What changes nothing still goes: CLIENT's questions, UNWATCH, an
    -- EXEC with no MULTI (Redis's own error).
    assert.equal("number", type(p:call { "CLIENT", "ID" }))
    assert.equal("OK", p:call { "UNWATCH" })
    local r, err = p:call { "EXEC" }
    assert.is_nil(r)
    assert.matches("without MULTI", err.message)
  end)

  it("a transaction with MULTI, EXEC, DISCARD or WATCH inside is refused, "
     .. "not answered with a shifted EXEC array", function()
    for _, word in ipairs { "MULTI", "exec", "DISCARD", "WATCH" } do
      local ok, err = pcall(pool.transaction, pool,
                            { { "INCR", "t" }, { word, "t" }, { "INCR", "t" } })
      assert.is_false(ok)
      assert.matches("pool:transaction: requests%[2%] is " .. word:upper(),
                     err)
    end
    assert.equal(resilnet.null, pool:call { "GET", "t" }) -- nothing ran
    local ok, err = pcall(pool.transaction, pool,
                          { { "INCR", "t" }, nil, { "INCR", "t" } })
    assert.is_false(ok)
    assert.matches("pool:transaction: requests%[2%] is nil", err)
  end)

  it("AUTH on a held connection does not hand its user to the pool's next "
     .. "call", function()
    assert.equal("OK", pool:call { "ACL", "SETUSER", "hostile_bob", "on",
                                   ">pw", "~*", "+@all" })
    local p = single()
    assert.equal("OK", p:hold(function(conn)
      return conn:call { "AUTH", "hostile_bob", "pw" }
    end))
    assert.equal("default", p:call { "ACL", "WHOAMI" })
    assert.equal(1, p:stats().holds_reset)
    pool:call { "ACL", "DELUSER", "hostile_bob" }
  end)
end)

describe("hostile setup options", function()
  it("a password with a zero byte is refused, not sent cut short, and "
     .. "never shown in the error", function()
    local ok, err = pcall(resilnet.pool, {
      endpoints = { "127.0.0.1:1" }, password = "abc\0hunter2" })
    assert.is_false(ok)
    assert.matches("option 'password' must be a string without zero bytes",
                   err)
    assert.is_nil(err:find("abc", 1, true))
    assert.is_nil(err:find("hunter2", 1, true))
  end)

  it("an rnp token too long is refused without showing it", function()
    local secret = ("s3cr3t"):rep(50)
    local ok, err = pcall(resilnet.pool, {
      endpoints = { "127.0.0.1:1" }, protocol = "rnp", auth = secret })
    assert.is_false(ok)
    assert.matches("option 'auth' must be a string of 1 to 255 bytes", err)
    assert.is_nil(err:find("s3cr3t", 1, true))
  end)
end)

describe("a transaction during a failover", function()
  local a, b
  -- Its pools close after each case: left open, their reconnect timers
  -- run into later specs' loops (step_spec reads timeout()).
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)
  setup(function()
    a = assert(R.start())
    b = assert(R.start())
  end)
  teardown(function()
    if a then R.stop(a) end
    if b then R.stop(b) end
  end)

  it("refused -READONLY (EXECABORT) by a demoted master waits for the "
     .. "master as a single call does, instead of failing", function()
    local p = H.pool { endpoints = { a.endpoint }, role = "master",
                       timeout = 8, size = 1,
                       reconnect = { initial = 0.05, max = 0.2 } }
    local admin = H.pool { endpoints = { a.endpoint }, timeout = 5 }
    assert.same({ 1 }, assert(p:transaction { { "INCR", "x" } }))
    -- Demoted behind the same address, as a managed service does...
    assert.equal("OK", admin:call { "REPLICAOF", "127.0.0.1",
                                    tostring(b.port) })
    local got, err
    H.go(function()
      resilnet.spawn(function()
        -- ... and promoted again a moment later.
        resilnet.sleep(0.5)
        assert.equal("OK", admin:call { "REPLICAOF", "NO", "ONE" })
      end)
      got, err = p:transaction { { "SET", "y", "1" }, { "INCR", "y" } }
    end, 20)
    assert.is_nil(err and err.message)
    assert.same({ "OK", 2 }, got)
    assert.equal("2", admin:call { "GET", "y" }) -- it ran once
  end)
end)
