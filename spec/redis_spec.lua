-- Against a real redis-server: RESP2 and RESP3 replies, nulls, errors.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"

local pool
R.describe("redis", function(p) pool = p end, function(redis)
  it("SET, GET, INCR", function()
    assert.equal("OK", pool:call { "SET", "k", "v" })
    assert.equal("v", pool:call { "GET", "k" })
    assert.equal(1, pool:call { "INCR", "n" })
    assert.equal(11, pool:call { "INCRBY", "n", 10 })
    assert.equal("OK", pool:call { "SET", "f", 1.5 })
    assert.equal("3", pool:call { "INCRBYFLOAT", "f", 1.5 })
    local big = string.rep("0123456789", 100000)
    assert.equal("OK", pool:call { "SET", "big", big })
    assert.is_true(pool:call { "GET", "big" } == big)
  end)

  it("LRANGE and HGETALL as arrays (RESP2)", function()
    assert.equal(3, pool:call { "RPUSH", "l", "a", "b", "c" })
    assert.same({ "a", "b", "c" }, pool:call { "LRANGE", "l", 0, -1 })
    assert.same({}, pool:call { "LRANGE", "nope", 0, -1 })
    pool:call { "HSET", "h", "f1", "v1" }
    pool:call { "HSET", "h", "f2", "v2" }
    local flat = pool:call { "HGETALL", "h" }
    assert.equal(4, #flat)
    local map = {}
    for i = 1, #flat, 2 do map[flat[i]] = flat[i + 1] end
    assert.same({ f1 = "v1", f2 = "v2" }, map)
  end)

  it("maps, doubles and nulls after HELLO 3 (RESP3)", function()
    -- RESP3 for every connection is the pool's setup; HELLO's own reply
    -- (a map) is asked on a held connection, since a pooled call may not
    -- change its connection's protocol under the pool.
    local p3 = H.pool { endpoints = { redis.endpoint }, size = 1,
                        setup = { { "HELLO", "3" } } }
    local hello = p3:hold(function(conn) return conn:call { "HELLO", "3" } end)
    assert.equal("table", type(hello))
    assert.equal(3, hello.proto)
    assert.equal("redis", hello.server)
    p3:call { "HSET", "h", "f1", "v1", "f2", "v2" }
    assert.same({ f1 = "v1", f2 = "v2" }, p3:call { "HGETALL", "h" })
    p3:call { "ZADD", "z", "2.5", "m" }
    assert.equal(2.5, p3:call { "ZSCORE", "z", "m" })
    assert.equal(resilnet.null, p3:call { "GET", "missing" })
    p3:call { "SADD", "s", "a" }
    assert.same({ "a" }, p3:call { "SMEMBERS", "s" })
  end)

  it("a nil reply is resilnet.null", function()
    assert.equal(resilnet.null, pool:call { "GET", "missing" })
    local r = pool:call { "MGET", "missing", "k2" }
    assert.same({ resilnet.null, resilnet.null }, r)
  end)

  it("an error reply is EREPLY with the server's message", function()
    pool:call { "SET", "s", "abc" }
    local reply, err = pool:call { "INCR", "s" }
    assert.is_nil(reply)
    assert.equal("EREPLY", err.code)
    assert.equal("ERR value is not an integer or out of range", err.message)
    assert.is_true(err.maybe_executed)
    assert.equal(redis.endpoint, err.endpoint)
    reply, err = pool:call { "NOSUCHCOMMAND" }
    assert.is_nil(reply)
    assert.matches("^ERR unknown command", err.message)
    -- errors nested in a reply are error objects
    local r = pool:call { "EVAL", "return {1, redis.error_reply('inner')}",
                          0 }
    assert.equal(1, r[1])
    assert.is_true(resilnet.is_error(r[2]))
    assert.equal("EREPLY", r[2].code)
    assert.matches("inner$", r[2].message)
  end)

  it("pipelines 10,000 calls from callbacks on one connection", function()
    local p1 = H.pool { endpoints = { redis.endpoint }, size = 1,
                        max_pending = 10000 }
    local n, answered, wrong = 10000, 0, 0
    for i = 1, n do
      p1:send({ "INCR", "counter" }, nil, function(reply)
        answered = answered + 1
        if reply ~= i then wrong = wrong + 1 end
      end)
    end
    H.go(function()
      while answered < n do resilnet.sleep(0.001) end
    end, 60)
    assert.equal(0, wrong)
    assert.equal("10000", p1:call { "GET", "counter" })
    assert.equal(1, p1:stats().connects)
  end)

  it("lets resilnet.run() return while pooled connections stay idle",
     function()
    local got
    resilnet.spawn(function() got = pool:call { "PING" } end)
    resilnet.run()
    assert.equal("PONG", got)
    assert.is_true(pool:stats().open >= 1)
    -- nothing but idle connections: the loop has no work
    assert.is_false(require("resilnet.core").run("nowait"))
  end)
end)
