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

  it("without classify an error reply is returned, never retried", function()
    local state = loading_peer(1)
    local pool = H.pool { endpoints = { state.peer.endpoint },
                          heartbeat = false }
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
