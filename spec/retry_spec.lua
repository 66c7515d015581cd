-- retry.classify: the application's say over retries. It can make an error
-- reply that proves the server did nothing (Redis -LOADING) retryable for
-- any call, and veto a retry; it cannot make a call that may have run
-- retryable unless the call is idempotent.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

-- A RESP peer: requests containing SET are counted; the first `loading`
-- of them get -LOADING, later ones +OK.
local function loading_peer(loading)
  local state = { sets = 0 }
  state.peer = H.raw_peer(function(chunk)
    local out = {}
    for _ in chunk:gmatch("SET") do
      state.sets = state.sets + 1
      out[#out + 1] = state.sets <= loading
        and "-LOADING Redis is loading the dataset in memory\r\n" or "+OK\r\n"
    end
    return table.concat(out)
  end)
  return state
end

describe("retry.classify", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("makes a -LOADING reply retryable, even for a call that is not "
     .. "idempotent", function()
    local state = loading_peer(2)
    local seen = {}
    local pool = H.pool {
      endpoints = { state.peer.endpoint }, heartbeat = false,
      retry = { attempts = 3, classify = function(err, request)
        seen[#seen + 1] = { code = err.code, message = err.message,
                            command = request[1], idempotent = err.idempotent }
        if err.code == "EREPLY" and err.message:find("^LOADING") then
          return "retry"
        end
      end },
    }
    local reply, err
    H.go(function() reply, err = pool:call { "SET", "k", "v" } end)
    assert.equal("OK", reply, tostring(err))
    assert.equal(3, state.sets)
    assert.equal(2, #seen)
    assert.equal("EREPLY", seen[1].code)
    assert.equal("SET", seen[1].command)
    assert.is_false(seen[1].idempotent)
    assert.equal(2, pool:stats().retries)
  end)

  it("stops at attempts: the last -LOADING is returned", function()
    local state = loading_peer(10)
    local pool = H.pool {
      endpoints = { state.peer.endpoint }, heartbeat = false,
      retry = { attempts = 2, classify = function() return "retry" end },
    }
    local reply, err
    H.go(function() reply, err = pool:call { "SET", "k", "v" } end)
    assert.is_nil(reply)
    assert.equal("EREPLY", err.code)
    assert.equal(2, err.attempts)
    assert.equal(2, state.sets)
  end)

  -- (-LOADING itself is in the built-in table of errors that prove nothing
  -- ran, spec/redis_errors_spec.lua: turned off here, it is any error.)
  it("without classify an error reply is returned, never retried", function()
    local state = loading_peer(1)
    local pool = H.pool { endpoints = { state.peer.endpoint },
                          heartbeat = false,
                          retry = { not_executed = false } }
    local reply, err
    H.go(function()
      reply, err = pool:call({ "SET", "k", "v" }, { idempotent = true })
    end)
    assert.is_nil(reply)
    assert.equal("EREPLY", err.code)
    assert.equal(1, state.sets)
  end)

  it("vetoes the retry of an idempotent call", function()
    local sets = 0
    local peer = H.raw_peer(function(chunk)
      if chunk:find("SET") then sets = sets + 1 end
      return false -- closes the connection: the request was sent
    end)
    local asked = 0
    local pool = H.pool {
      endpoints = { peer.endpoint }, heartbeat = false,
      retry = { classify = function(err)
        asked = asked + 1
        assert.is_true(err.code == "EOF" or err.code == "ECONNRESET")
        return "fail"
      end },
    }
    local reply, err
    H.go(function()
      reply, err = pool:call({ "SET", "k", "v" }, { idempotent = true })
    end)
    assert.is_nil(reply)
    assert.is_true(err.maybe_executed)
    assert.equal(1, err.attempts)
    assert.equal(1, asked)
    assert.equal(1, sets)
  end)

  it("cannot make a call that may have run retryable", function()
    local sets = 0
    local peer = H.raw_peer(function(chunk)
      if chunk:find("SET") then sets = sets + 1 end
      return false
    end)
    local pool = H.pool {
      endpoints = { peer.endpoint }, heartbeat = false,
      retry = { classify = function() return "retry" end },
    }
    local reply, err
    H.go(function() reply, err = pool:call { "SET", "k", "v" } end)
    assert.is_nil(reply)
    assert.is_true(err.maybe_executed)
    assert.equal(1, sets)
  end)

  it("a bad answer is an error raised from the waiting call", function()
    local state = loading_peer(1)
    local pool = H.pool {
      endpoints = { state.peer.endpoint }, heartbeat = false,
      retry = { classify = function() return "maybe" end },
    }
    assert.has_error(function() pool:call { "SET", "k", "v" } end)
  end)
end)

describe("hedging", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  -- A line server whose first execution is slow (0.5 s) and the rest fast;
  -- it counts executions.
  local function slow_first()
    local state = { executed = 0 }
    local _, ep = H.server { protocol = "line", handler = function(request)
      state.executed = state.executed + 1
      if state.executed == 1 then resilnet.sleep(0.5) end
      return request
    end }
    state.endpoint = ep
    return state
  end

  it("an idempotent call slower than hedge.delay gets a second attempt on "
     .. "another connection, and the first reply wins", function()
    local state = slow_first()
    local pool = H.pool { protocol = "line", endpoints = { state.endpoint },
                          hedge = { delay = 0.05, max = 2 } }
    local events = {}
    pool:on("retry", function(ev) events[#events + 1] = ev.reason end)
    local t0 = resilnet.now()
    local reply, err = pool:call("a", { idempotent = true })
    local took = resilnet.now() - t0
    assert.equal("a", reply, tostring(err))
    assert.is_true(took < 0.45, "answered by the hedge, took " .. took)
    assert.equal(2, state.executed)
    assert.same({ "hedge" }, events)
    local st = pool:stats()
    assert.equal(1, st.hedges)
    assert.equal(1, st.completed)
    -- The slow attempt's late reply is dropped, and the connection still
    -- answers the next call with its own reply.
    H.go(function() resilnet.sleep(0.6) end)
    assert.equal("b", pool:call("b", { idempotent = true }))
    assert.equal(0, pool:stats().failed)
  end)

  it("never hedges a call that is not idempotent", function()
    local state = slow_first()
    local pool = H.pool { protocol = "line", endpoints = { state.endpoint },
                          hedge = { delay = 0.05 } }
    assert.equal("a", pool:call("a"))
    assert.equal(1, state.executed)
    assert.equal(0, pool:stats().hedges)
  end)

  it("hedge = false on the call turns it off", function()
    local state = slow_first()
    local pool = H.pool { protocol = "line", endpoints = { state.endpoint },
                          hedge = { delay = 0.05 } }
    assert.equal("a", pool:call("a", { idempotent = true, hedge = false }))
    assert.equal(1, state.executed)
  end)

  it("a hedge answering while its call waits out a retry delay ends the "
     .. "wait (no call left behind)", function()
    -- The call's own attempt gets an error reply that classify calls
    -- retryable; during the retry delay the hedge's reply arrives.
    local n = 0
    local _, ep = H.server { handler = function()
      n = n + 1
      local me = n
      resilnet.sleep(0.1)
      if me == 1 then error("LOADING") end
      return "ok"
    end }
    local pool = H.pool {
      endpoints = { ep }, min_idle = 2, hedge = { delay = 0.05 },
      retry = { initial = 0.5, max = 1, classify = function(err)
        if err.code == "EREPLY" then return "retry" end
      end } }
    H.go(function()
      while pool:stats().idle < 2 do resilnet.sleep(0.01) end
    end)
    local reply, err
    H.go(function()
      reply, err = pool:call({ "GET", "k" }, { idempotent = true })
    end)
    assert.equal("ok", reply, tostring(err))
    local st = pool:stats()
    assert.equal(0, st.pending)
    assert.equal(0, st.in_flight)
    assert.equal(1, st.hedges)
  end)

  it("a per-call hedge works without a pool default", function()
    local state = slow_first()
    local pool = H.pool { protocol = "line", endpoints = { state.endpoint } }
    local t0 = resilnet.now()
    assert.equal("a", pool:call("a", { idempotent = true,
                                       hedge = { delay = 0.05 } }))
    assert.is_true(resilnet.now() - t0 < 0.45)
    assert.equal(2, state.executed)
  end)
end)

