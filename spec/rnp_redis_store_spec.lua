-- The rnp server with resilnet.dedupe_redis, the Redis-backed dedupe
-- store, against a real redis-server: a finished key outlives the server
-- process that ran it. (A spec of its own: it needs redis-server, and it
-- runs in a process of its own, like the other fault specs.)
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local client = require("spec.helpers.rnp_raw_client").client
local P = require "spec.helpers.process"

describe("rnp server with the Redis dedupe store", function()
  local R = require "spec.helpers.redis"
  local redis, why

  setup(function() redis, why = R.start() end)
  teardown(function() if redis then R.stop(redis) end end)
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("replays a finished key from another server process's record",
     function()
    assert(redis, why)
    local store_mod = require "resilnet.dedupe_redis"
    local ran = 0
    local function handler(req)
      ran = ran + 1
      return "charged " .. req
    end
    H.go(function()
      local pool = H.pool { endpoints = { redis.endpoint } }
      local prefix = "spec:" .. math.random(1, 1e9) .. ":"
      local opts = function()
        return { protocol = "rnp", handler = handler,
                 dedupe = { window = 30,
                            store = store_mod.new(pool, { prefix = prefix }) } }
      end
      local first, ep1 = H.server(opts())
      local c = client(ep1)
      c:hello()
      assert.equal("charged 50", c:answer(c:request("50", { key = "pay-1" })).payload)
      -- the record is in Redis once the store's finish ran
      c:wait(function()
        local v = pool:call { "GET", prefix .. "pay-1" }
        return v == "Rcharged 50"
      end, "the record")
      c:close()
      first:close()
      -- a new server (as after a crash) replays instead of running
      local _, ep2 = H.server(opts())
      local d = client(ep2)
      d:hello()
      assert.equal("charged 50", d:answer(d:request("50", { key = "pay-1" })).payload)
      assert.equal(1, ran)
      -- a claim left by a server that died stays "in progress"
      pool:call { "SET", prefix .. "pay-2", "Pdead:1", "PX", 30000 }
      local busy = d:answer(d:request("50", { key = "pay-2" }))
      assert.equal(6, busy.code)
      assert.equal(1, ran)
      d:close()
    end)
  end)

  -- issue 15, defect 11: the server now releases a claim that failed, and
  -- a release must give back only this store's own claim
  it("releases only its own claim, never another server's", function()
    assert(redis, why)
    local store_mod = require "resilnet.dedupe_redis"
    H.go(function()
      local pool = H.pool { endpoints = { redis.endpoint } }
      local prefix = "spec:" .. math.random(1, 1e9) .. ":"
      local a = store_mod.new(pool, { prefix = prefix })
      local b = store_mod.new(pool, { prefix = prefix })
      assert.equal("new", a:claim("k", 30))
      assert.equal("busy", b:claim("k", 30))
      assert.is_true(b:release("k")) -- b has no claim of its own on k
      assert.equal("busy", b:claim("k", 30))
      assert.is_true(a:release("k"))
      assert.equal("new", b:claim("k", 30))
      assert.is_true(b:finish("k", "done", false, 30))
      assert.is_true(b:release("k")) -- a finished answer stays
      assert.same({ "done", "done", false }, { a:claim("k", 30) })
    end)
  end)

  it("SIGKILL under keyed non-idempotent calls: every call with a reply "
     .. "ran exactly once, none twice", function()
    assert(redis, why)
    local ledger = os.tmpname()
    local opts = { protocol = "rnp", handler = "ledger", ledger = ledger,
                   dedupe = "on", dedupe_store = redis.endpoint }
    local server = P.server(opts)
    local restarted
    local ok, err = pcall(function()
      local pool = H.pool { endpoints = { "127.0.0.1:" .. server.port },
                            protocol = "rnp", size = 4, timeout = 8,
                            reconnect = { initial = 0.02, max = 0.1 },
                            retry = { attempts = 5,
                                      budget = { tokens = 1000 } } }
      local results = {}
      H.workers(16, function(w, n)
        local id = "k-" .. w .. "-" .. n
        -- Each call takes the server 20 ms: a kill catches some inside.
        local reply, e = pool:call(id .. " 20", { key = id })
        results[id] = { reply = reply, err = e }
      end, function()
        resilnet.sleep(0.5)
        server:kill("KILL")
        opts.port = server.port
        restarted = P.server(opts)
        resilnet.sleep(0.7)
      end)
      local counts = P.read_ledger(ledger)
      local answered, failed, twice = 0, 0, {}
      for id, r in pairs(results) do
        local runs = counts[id] or 0
        if runs > 1 then twice[#twice + 1] = id .. " ran " .. runs end
        if r.reply then
          answered = answered + 1
          assert.equal(id, r.reply)
          assert.equal(1, runs, id .. " answered but ran " .. runs)
        else
          failed = failed + 1
          if r.err.maybe_executed == false then
            assert.equal(0, runs, id .. " not executed but ran")
          end
        end
      end
      assert.same({}, twice)
      assert.is_true(answered > 100, "only " .. answered .. " answered")
      print(("\n  redis-backed dedupe across SIGKILL: %d calls answered, "
             .. "%d failed, none ran twice"):format(answered, failed))
    end)
    server:close()
    if restarted then restarted:close() end
    os.remove(ledger)
    assert(ok, err)
  end)
end)
