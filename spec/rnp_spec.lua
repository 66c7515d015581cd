-- rnp end to end: resilnet's pool against resilnet's rnp server, in this
-- process and in server processes that keep a ledger of what they ran.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local P = require "spec.helpers.process"

-- An rnp server process with a ledger of what it ran, keys deduplicated.
local function ledger_server(ledger, port)
  return P.server { protocol = "rnp", handler = "ledger", ledger = ledger,
                    dedupe = "on", port = port }
end

describe("rnp", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("100 calls in flight on one connection each get their own reply",
     function()
    local _, endpoint = H.server {
      protocol = "rnp", max_concurrent = 200,
      handler = function(request)
        -- Random delays finish the handlers in another order than they
        -- started: replies go back as they finish, matched by id.
        resilnet.sleep(math.random() * 0.05)
        return "re:" .. request
      end,
    }
    local pool = H.pool { endpoints = { endpoint }, protocol = "rnp",
                          size = 1 }
    H.go(function()
      local got, n = {}, 0
      for i = 1, 100 do
        pool:send("token" .. i, nil, function(reply, err)
          assert.is_nil(err)
          got[i] = reply
          n = n + 1
        end)
      end
      for _ = 1, 500 do
        if n == 100 then break end
        resilnet.sleep(0.01)
      end
      assert.equal(100, n)
      for i = 1, 100 do assert.equal("re:token" .. i, got[i]) end
      assert.equal(1, pool:stats().connects)
    end)
  end)

  it("a handler's error comes back as EREPLY; the remaining deadline "
     .. "reaches the handler", function()
    local seen
    local _, endpoint = H.server {
      protocol = "rnp",
      handler = function(request, ctx)
        seen = ctx.deadline
        if request == "boom" then error("no such thing", 0) end
        return request
      end,
    }
    local pool = H.pool { endpoints = { endpoint }, protocol = "rnp" }
    assert.equal("x", pool:call("x", { timeout = 2 }))
    assert.is_true(seen > 1 and seen <= 2)
    local reply, err = pool:call("boom")
    assert.is_nil(reply)
    assert.equal("EREPLY", err.code)
    assert.matches("no such thing", err.message)
    assert.is_true(err.maybe_executed)
  end)

  it("keys: a retried keyed call runs once; key = true keeps one key "
     .. "across attempts", function()
    local runs, keys = {}, {}
    local srv, endpoint = H.server {
      protocol = "rnp", dedupe = { window = 60 },
      handler = function(request, ctx)
        runs[request] = (runs[request] or 0) + 1
        keys[#keys + 1] = ctx.key
        return request
      end,
    }
    local pool = H.pool { endpoints = { endpoint }, protocol = "rnp" }
    assert.equal("a", pool:call("a", { key = "order-1" }))
    -- The same key again is a duplicate: replayed, not run.
    assert.equal("a", pool:call("a", { key = "order-1" }))
    assert.equal(1, runs.a)
    assert.equal("b", pool:call("b", { key = true }))
    assert.equal(32, #keys[2])
    assert.has_error(function() pool:call("c", { key = "" }) end)
    assert.has_error(function() pool:call("c", { key = 5 }) end)
    srv:close()
  end)

  it("a planned restart under load: GOAWAY, a new process on the same "
     .. "port, zero failed calls, nothing run twice", function()
    local ledger = os.tmpname()
    local old = ledger_server(ledger)
    local new
    local ok, err = pcall(function()
      local endpoint = "127.0.0.1:" .. old.port
      local pool = H.pool { endpoints = { endpoint }, protocol = "rnp",
                            size = 4, timeout = 10,
                            reconnect = { initial = 0.02, max = 0.1 } }
      local admin = H.pool { endpoints = { endpoint }, protocol = "rnp",
                             size = 1 }
      local results = {}
      local kinds = { "idem", "keyed", "plain" }
      H.workers(40, function(w, n)
        local kind = kinds[(n + w) % 3 + 1]
        local id = kind .. "-" .. w .. "-" .. n
        local reply, e = pool:call(id .. " 0", {
          idempotent = kind == "idem", key = kind == "keyed" or nil })
        results[id] = { reply = reply, err = e }
        resilnet.sleep(0.02) -- 40 workers: about 2,000 calls a second
      end, function()
        resilnet.sleep(1)
        assert.equal("draining", admin:call("DRAIN"))
        new = ledger_server(ledger, old.port)
        resilnet.sleep(1)
      end)

      local counts = P.read_ledger(ledger)
      local failed, n = {}, 0
      for id, r in pairs(results) do
        n = n + 1
        if r.err then failed[#failed + 1] = id .. ": " .. tostring(r.err)
        else assert.equal(id, r.reply) end
        assert.equal(1, counts[id], id .. " ran " .. tostring(counts[id]))
      end
      assert.same({}, failed)
      assert.is_true(n > 1000, "only " .. n .. " calls")
      assert.is_true(pool:stats().goaways >= 1)
      print(("\n  planned restart: %d calls, %d GOAWAYs, %d not executed "
             .. "and moved"):format(n, pool:stats().goaways,
                                    pool:stats().not_executed))
    end)
    old:close()
    if new then new:close() end
    os.remove(ledger)
    assert(ok, err)
  end)
end)
