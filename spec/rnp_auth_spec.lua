-- rnp authentication between a resilnet pool and a resilnet server on
-- loopback: a pool without the token, or with a wrong one, runs no handler
-- (executions counted) and gets EAUTH, not executed, without a reconnect
-- storm; with the token calls succeed as its identity; auth.check decides
-- what no listed token does; dedupe keys are scoped per identity. Each
-- case bounded by H.go's timeout.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

-- An rnp server with auth that counts its handler's runs.
local function counting_server(auth, extra)
  local counter = { ran = 0, events = {} }
  local opts = {
    protocol = "rnp", auth = auth,
    handler = function(req, ctx)
      counter.ran = counter.ran + 1
      return req .. " from " .. tostring(ctx.identity)
    end,
  }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local srv, ep = H.server(opts)
  srv:on("auth", function(ev) counter.events[#counter.events + 1] = ev end)
  return srv, ep, counter
end

local function pool(ep, token, extra)
  local opts = { endpoints = { ep }, protocol = "rnp", auth = token,
                 timeout = 0.3 }
  for k, v in pairs(extra or {}) do opts[k] = v end
  return H.pool(opts)
end

describe("rnp auth", function()
  after_each(H.cleanup)

  it("runs nothing for a pool without the token or with a wrong one: "
     .. "EAUTH, not executed, with the auth event and stat", function()
    local srv, ep, counter = counting_server {
      tokens = { "s3cret", { token = "other", identity = "bob" } } }
    H.go(function()
      for _, token in ipairs { false, "wrong" } do
        local p = pool(ep, token or nil)
        for _ = 1, 3 do
          local v, err = p:call("hello")
          assert.is_nil(v)
          assert.equal("EAUTH", err.code)
          assert.is_false(err.maybe_executed)
        end
        p:close()
      end
      assert.equal(0, counter.ran)
      assert.equal(2, srv:stats().auth_refused)
      assert.equal(2, #counter.events)
      assert.same({ "auth", "EAUTH", "no token" },
                  { counter.events[1].type, counter.events[1].error,
                    counter.events[1].detail })
      assert.equal("unknown token", counter.events[2].detail)
      for _, ev in ipairs(counter.events) do
        assert.not_matches("wrong", ev.detail) -- never the token
      end
    end, 20)
  end)

  it("serves a pool with the token, as the token's identity", function()
    local srv, ep, counter = counting_server {
      tokens = { "s3cret", { token = "other", identity = "bob" } } }
    H.go(function()
      assert.equal("a from token-1", assert(pool(ep, "s3cret"):call("a")))
      assert.equal("b from bob", assert(pool(ep, "other"):call("b")))
      assert.equal(2, counter.ran)
      assert.equal(0, srv:stats().auth_refused)
    end, 20)
  end)

  it("a refused token is a configuration fault: the endpoint waits "
     .. "reconnect.max between connects, no reconnect storm", function()
    local srv, ep, counter = counting_server { tokens = { "s3cret" } }
    local p = pool(ep, "wrong", { timeout = 0.2,
                                  reconnect = { initial = 0.01, max = 1 } })
    local states = {}
    p:on("state", function(ev)
      if ev.reason == "auth" then states[#states + 1] = ev.state end
    end)
    H.go(function()
      local t0 = resilnet.now()
      local calls = 0
      while resilnet.now() - t0 < 2.5 do
        local _, err = p:call("x")
        calls = calls + 1
        assert.is_false(err.maybe_executed)
      end
      -- an ordinary failure would back off from 10 ms: dozens of connects
      local connects = srv:stats().auth_refused
      assert.is_true(connects >= 2 and connects <= 4,
                     "connects: " .. connects)
      assert.equal(connects, p:stats().connect_failures)
      assert.is_true(calls >= 5)
      assert.equal(0, counter.ran)
      assert.truthy(states[1]) -- the pool said why
    end, 20)
  end)

  it("asks auth.check what no listed token settles", function()
    local asked = {}
    local srv, ep, counter = counting_server {
      tokens = { "listed" },
      check = function(token, subject)
        asked[#asked + 1] = { token, subject }
        local user = token and token:match("^user:(%w+)$")
        return user
      end,
    }
    H.go(function()
      assert.equal("x from alice", assert(pool(ep, "user:alice"):call("x")))
      assert.equal("y from token-1", assert(pool(ep, "listed"):call("y")))
      local _, err = pool(ep, "nobody"):call("z")
      assert.equal("EAUTH", err.code)
      assert.equal(2, counter.ran)
      assert.same({ { "user:alice" }, { "nobody" } }, asked)
      assert.equal(1, srv:stats().auth_refused)
    end, 20)
  end)

  it("takes a function as auth = {check = fn}", function()
    local _, ep = counting_server(function(token)
      return token == "let me in" and "guest" or nil
    end)
    H.go(function()
      assert.equal("x from guest", assert(pool(ep, "let me in"):call("x")))
      local _, err = pool(ep):call("x")
      assert.equal("EAUTH", err.code)
    end, 20)
  end)

  it("scopes dedupe keys per identity", function()
    local _, ep, counter = counting_server(
      { tokens = { { token = "a", identity = "alice" },
                   { token = "b", identity = "bob" } } },
      { dedupe = {} })
    H.go(function()
      local alice, bob = pool(ep, "a"), pool(ep, "b")
      assert.equal("k from alice", assert(alice:call("k", { key = "K1" })))
      -- alice again: replayed, not run again
      assert.equal("k from alice", assert(alice:call("k", { key = "K1" })))
      -- bob with the same key: his own key, run, his own reply
      assert.equal("k from bob", assert(bob:call("k", { key = "K1" })))
      assert.equal(2, counter.ran)
    end, 20)
  end)

  it("raises for auth on another protocol, an empty auth, bad tokens, "
     .. "and a pool token on resp", function()
    local function server_error(opts)
      opts.listen = "127.0.0.1:0"
      opts.handler = function() end
      local ok, err = pcall(resilnet.server, opts)
      assert.is_false(ok)
      return err
    end
    assert.matches("applies only to protocol 'rnp'",
                   server_error { protocol = "resp",
                                  auth = { tokens = { "x" } } })
    assert.matches("needs tokens, check or certificate",
                   server_error { protocol = "rnp", auth = {} })
    assert.matches("option 'auth.tokens' must be",
                   server_error { protocol = "rnp",
                                  auth = { tokens = { "" } } })
    assert.matches("option 'auth.tokens' must be",
                   server_error { protocol = "rnp",
                                  auth = { tokens = { ("x"):rep(256) } } })
    assert.matches("tls.verify_client",
                   server_error { protocol = "rnp",
                                  auth = { certificate = true } })
    local ok, err = pcall(resilnet.pool, { endpoints = { "127.0.0.1:1" },
                                           auth = "x" })
    assert.is_false(ok)
    assert.matches("applies only to protocol 'rnp'", err)
    -- an empty or over-long token is named, not "invalid options"
    for _, token in ipairs { "", ("x"):rep(256) } do
      ok, err = pcall(resilnet.pool, { endpoints = { "127.0.0.1:1" },
                                       protocol = "rnp", auth = token })
      assert.is_false(ok)
      assert.matches("option 'auth' must be a string of 1 to 255 bytes",
                     err, 1, true)
    end
  end)
end)
