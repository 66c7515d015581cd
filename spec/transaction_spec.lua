-- pool:transaction while the fault proxy resets connections (issue 19):
-- 16 tasks each run 500 transactions MULTI; INCR a; INCR b; SADD ran <id>;
-- EXEC against a real redis-server behind resilnet.proxy, while a task
-- resets every live connection (a real RST on both sides) every 400 finished
-- transactions.
-- Transactions are not idempotent, so none is sent again once written.
-- Afterwards, from the server's record:
--   - a == b: no transaction ran in part;
--   - the set `ran` holds the id of every transaction that ran, once (its
--     size is a: none counted twice);
--   - every success is in it, every failure with maybe_executed == false
--     is not, and a == successes + the maybe_executed failures in it.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"

local TASKS, EACH = 16, 500
local RESET_EVERY = 400 -- finished transactions between two resets

R.describe_server("pool:transaction under connection resets",
                  function(redis)
  it("16 tasks x 500: a == b, each transaction counted once", function()
    local px = H.track(assert(resilnet.proxy { upstream = redis.endpoint }))
    local pool = H.pool { endpoints = { px:endpoint() }, timeout = 5,
                          size = 16 }
    local direct = H.pool { endpoints = { redis.endpoint }, timeout = 5 }
    assert.equal("OK", direct:call { "FLUSHALL" })

    local outcome = {} -- id -> "ok" | "maybe" | "not"
    local running, resets, finished = TASKS, 0, 0
    local started = resilnet.now()
    H.go(function()
      for t = 1, TASKS do
        resilnet.spawn(function()
          for i = 1, EACH do
            local id = t .. ":" .. i
            local r, err = pool:transaction {
              { "INCR", "a" }, { "INCR", "b" }, { "SADD", "ran", id },
            }
            if r then
              assert(type(r[1]) == "number" and r[3] == 1, "EXEC's array")
              outcome[id] = "ok"
            else
              assert(resilnet.is_error(err), tostring(err))
              outcome[id] = err.maybe_executed and "maybe" or "not"
            end
            finished = finished + 1
          end
          running = running - 1
        end)
      end
      -- The faults: every live connection reset, again and again, until
      -- the workload ends (bounded by the spec's own wait below).
      -- Resets follow progress, not the clock: every RESET_EVERY finished
      -- transactions, so a loaded machine (where 8000 transactions take
      -- longer or shorter) still sees about TASKS * EACH / RESET_EVERY.
      local next_reset = RESET_EVERY
      while running > 0 and resilnet.now() - started < 60 do
        resilnet.sleep(0.002)
        if finished >= next_reset then
          px:reset_all()
          resets = resets + 1
          next_reset = finished + RESET_EVERY
        end
      end
      assert(running == 0, "the workload did not finish in 60 s")
    end, 90)

    local a = tonumber(direct:call { "GET", "a" })
    local b = tonumber(direct:call { "GET", "b" })
    local ran = {}
    for _, id in ipairs(assert(direct:call { "SMEMBERS", "ran" })) do
      ran[id] = true
    end
    local count = { ok = 0, maybe = 0, ["not"] = 0 }
    local maybe_ran = 0
    for id, o in pairs(outcome) do
      count[o] = count[o] + 1
      if o == "ok" then
        assert(ran[id], "success " .. id .. " is not in the record")
      elseif o == "not" then
        assert(not ran[id], "not executed " .. id .. " ran")
      elseif ran[id] then
        maybe_ran = maybe_ran + 1
      end
    end
    local n = 0
    for _ in pairs(ran) do n = n + 1 end
    print(("\n[transaction] %d resets in %.1f s: %d ok, %d maybe (%d ran), "
           .. "%d not run; a = %d"):format(resets, resilnet.now() - started,
           count.ok, count.maybe, maybe_ran, count["not"], a or -1))
    assert.equal(TASKS * EACH, count.ok + count.maybe + count["not"])
    assert.equal(a, b)
    assert.equal(a, n) -- the set's size: no transaction counted twice
    assert.equal(a, count.ok + maybe_ran)
    -- The faults were real: some transactions failed, most got through.
    assert.is_true(resets >= 10, "resets: " .. resets)
    assert.is_true(count.maybe + count["not"] > 0, "no transaction failed")
    assert.is_true(count.ok > TASKS * EACH / 2, "successes: " .. count.ok)
  end)
end)
