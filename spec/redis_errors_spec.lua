-- Redis error replies that prove nothing ran (-LOADING, -READONLY, ...,
-- -NOSCRIPT; docs/retry-rules.md, "Redis errors that prove nothing ran"):
-- retried whatever the call's kind, maybe_executed = false; never for an
-- error to EXEC or from inside a script; retry.not_executed replaces the
-- table or (false) turns it off.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"

-- An error object goes out verbatim as "-<message>".
local function redis_error(message)
  return setmetatable({ code = "EREPLY", message = message },
                      resilnet.error_metatable)
end

-- A resilnet RESP server playing a loading Redis: the first `loading`
-- INCRs get -LOADING, later ones run. Counts what it saw and what ran.
local function loading_server(loading)
  local state = { seen = 0, ran = 0 }
  local _, endpoint = H.server { protocol = "resp", handler = function(cmd)
    if cmd[1] ~= "INCR" then return "PONG" end
    state.seen = state.seen + 1
    if state.seen <= loading then
      return redis_error("LOADING Redis is loading the dataset in memory")
    end
    state.ran = state.ran + 1
    return state.ran
  end }
  state.endpoint = endpoint
  return state
end

describe("Redis errors that prove nothing ran", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("-LOADING twice, then the INCR (not idempotent) runs once", function()
    local s = loading_server(2)
    local pool = H.pool { endpoints = { s.endpoint }, heartbeat = false }
    local n, err
    H.go(function() n, err = pool:call { "INCR", "k" } end)
    assert.equal(1, n, tostring(err))
    assert.equal(3, s.seen)
    assert.equal(1, s.ran)
    assert.equal(2, pool:stats().retries)
    assert.equal(2, pool:stats().not_executed)
  end)

  it("attempts used up: the -LOADING is returned, not executed", function()
    local s = loading_server(10)
    local pool = H.pool { endpoints = { s.endpoint }, heartbeat = false }
    local n, err
    H.go(function() n, err = pool:call { "INCR", "k" } end)
    assert.is_nil(n)
    assert.equal("EREPLY", err.code)
    assert.equal(3, err.attempts)
    assert.is_false(err.maybe_executed)
    assert.equal(3, s.seen)
    assert.equal(0, s.ran)
  end)

  it("retry.not_executed = false: the first -LOADING is the answer",
     function()
    local s = loading_server(1)
    local pool = H.pool { endpoints = { s.endpoint }, heartbeat = false,
                          retry = { not_executed = false } }
    local n, err
    H.go(function() n, err = pool:call { "INCR", "k" } end)
    assert.is_nil(n)
    assert.equal("EREPLY", err.code)
    assert.equal(1, err.attempts)
    assert.is_true(err.maybe_executed)
  end)

  it("retry.not_executed replaces the table", function()
    local s = loading_server(1)
    local pool = H.pool { endpoints = { s.endpoint }, heartbeat = false,
                          retry = { not_executed = { "TRYAGAIN" } } }
    local n, err
    H.go(function() n, err = pool:call { "INCR", "k" } end)
    assert.is_nil(n)
    assert.equal(1, err.attempts)
    local p2 = H.pool { endpoints = { s.endpoint }, heartbeat = false,
                        retry = { not_executed = { "TRYAGAIN", "LOADING" } } }
    s.seen = 0
    H.go(function() n, err = p2:call { "INCR", "k" } end)
    assert.equal(1, n, tostring(err))
  end)

  it("checks the option", function()
    assert.has_error(function()
      resilnet.pool { endpoints = { "127.0.0.1:1" },
                      retry = { not_executed = "LOADING" } }
    end)
    assert.has_error(function()
      resilnet.pool { endpoints = { "127.0.0.1:1" },
                      retry = { not_executed = { 1 } } }
    end)
  end)
end)

local pool
R.describe("Redis errors that prove nothing ran, on redis-server",
           function(p) pool = p end, function()
  it("EVALSHA of an unknown script: retried, then NOSCRIPT, not executed",
     function()
    local r, err = pool:call { "EVALSHA", string.rep("ab", 20), 0 }
    assert.is_nil(r)
    assert.equal("EREPLY", err.code)
    assert.truthy(err.message:find("^NOSCRIPT"))
    assert.equal(3, err.attempts)
    assert.is_false(err.maybe_executed)
  end)

  it("an error from inside a script after a write: answered once, may "
     .. "have executed", function()
    local r, err = pool:call { "EVAL", "redis.call('INCR', KEYS[1]) "
      .. "return redis.error_reply('READONLY made up')", 1, "n" }
    assert.is_nil(r)
    assert.equal("EREPLY", err.code)
    assert.truthy(err.message:find("^READONLY"))
    assert.equal(1, err.attempts)
    assert.is_true(err.maybe_executed)
    assert.equal("1", pool:call { "GET", "n" })
  end)

  it("an ordinary error is answered once, may have executed", function()
    pool:call { "SET", "s", "text" }
    local r, err = pool:call { "INCR", "s" }
    assert.is_nil(r)
    assert.equal("EREPLY", err.code)
    assert.equal(1, err.attempts)
    assert.is_true(err.maybe_executed)
  end)
end)
