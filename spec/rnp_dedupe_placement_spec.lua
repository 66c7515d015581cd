-- A keyed call's retry goes only where its key is known: two real resilnet
-- servers with the in-memory dedupe store (each keeps its own keys) in one
-- pool. The first attempt runs on one of them and its connection is reset
-- before the reply (the harness proxy in front of each server); the retry
-- must not go to the other server, which would run it again (a card
-- charged twice), but back to the one whose store holds the key.
-- Regression: retries preferred another endpoint, and the pool took the
-- caller's word that the servers keep keys (docs/protocol.md section 9.1).
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local wait_for = require "spec.helpers.wait"

describe("rnp keyed call retried across two servers", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  local function two_servers(dedupe_on)
    local ran, first = {}, nil
    local proxies = {}
    local function server(name)
      local function handler(req)
        ran[req] = (ran[req] or 0) + 1
        ran[name] = (ran[name] or 0) + 1
        if first == nil then
          -- The first attempt ran; its reply is lost with the connection.
          first = name
          proxies[name]:reset_all()
        end
        return "charged " .. req
      end
      local _, ep = H.server { protocol = "rnp", handler = handler,
                               dedupe = dedupe_on and { window = 30 } or nil }
      proxies[name] = H.track(resilnet.proxy { listen = "127.0.0.1:0",
                                               upstream = ep })
      return proxies[name]:endpoint()
    end
    local endpoints = { server("a"), server("b") }
    local pool = H.pool { endpoints = endpoints, protocol = "rnp",
                          min_idle = 1, timeout = 2, heartbeat = false,
                          reconnect = { initial = 0.01, max = 0.05 },
                          retry = { attempts = 3, initial = 0.01 } }
    -- Both endpoints ready: a retry could go to either.
    wait_for(function()
      return proxies.a:connections() >= 1 and proxies.b:connections() >= 1
    end, 5, "a connection to each server")
    return pool, ran, function() return first end
  end

  it("runs the handler exactly once over both servers (in-memory stores)",
     function()
    H.go(function()
      local pool, ran, first = two_servers(true)
      local reply, err = pool:call("order-17", { key = "order-17" })
      assert.is_nil(err)
      assert.equal("charged order-17", reply)
      assert.equal(1, ran["order-17"])
      local other = first() == "a" and "b" or "a"
      assert.is_nil(ran[other]) -- never sent where its key is unknown
    end)
  end)

  it("announces a Lua store's id, and refuses one that is not 16 bytes",
     function()
    local client = require("spec.helpers.rnp_raw_client").client
    local function store(id)
      return { id = id,
               claim = function() return "new" end,
               finish = function() return true end,
               release = function() return true end }
    end
    H.go(function()
      local _, ep = H.server { protocol = "rnp", dedupe = {
                                 store = store("0123456789abcdef") } }
      local c = client(ep)
      assert.equal("0123456789abcdef", c:hello().fields[131])
      c:close()
      local _, ep2 = H.server { protocol = "rnp", dedupe = { window = 1 } }
      local d = client(ep2)
      local hello = d:hello()
      assert.equal(hello.fields[4], hello.fields[131]) -- its incarnation
      d:close()
      local _, ep3 = H.server { protocol = "rnp" }
      local e = client(ep3)
      assert.is_nil(e:hello().fields[131]) -- keeps no keys: says none
      e:close()
    end)
    assert.has_error(function()
      resilnet.server { protocol = "rnp", listen = "127.0.0.1:0",
                        handler = function() end,
                        dedupe = { store = store("short") } }
    end, "resilnet.server: dedupe.store.id must be a string of 16 bytes "
         .. "(the store's id)")
  end)

  it("does not retry a keyed call on servers that keep no keys", function()
    H.go(function()
      local pool, ran = two_servers(false)
      local reply, err = pool:call("order-18", { key = "order-18" })
      assert.is_nil(reply)
      assert.is_true(err.maybe_executed)
      assert.equal(1, err.attempts)
      assert.equal(1, ran["order-18"])
    end)
  end)
end)
