-- The rnp server with resilnet.dedupe_redis, the Redis-backed dedupe
-- store, against a real redis-server: a finished key outlives the server
-- process that ran it. (A spec of its own: it needs redis-server, and it
-- runs in a process of its own, like the other fault specs.)
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local client = require("spec.helpers.rnp_raw_client").client

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
end)
