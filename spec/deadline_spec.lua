-- Deadlines fire on time, whatever else waits beside them.
--
-- Regression (issue 14): a call started from inside the expiry of another
-- (a task calling again right after its call timed out) pushed the pool's
-- deadline lane a whole timeout ahead, past older deadlines due sooner:
-- calls with timeouts of 1, 2 and 3 s ended after 2, 4 and 6 s.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

describe("deadlines", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("1,000 calls on staggered timeouts each end on time", function()
    -- A peer that reads every request and never answers; no heartbeats,
    -- so only the deadline ends a call.
    local peer = H.raw_peer(function() return "" end)
    local pool = H.pool { endpoints = { peer.endpoint }, protocol = "line",
                          heartbeat = false, timeout = 0.3, size = 8,
                          max_pending = 2000 }
    -- The pool's own timeout (its deadline lane) and others (the timer
    -- heap), mixed.
    local timeouts = { false, 0.2, false, 0.25, false, 0.35 }
    local results = {}
    local function record(kind, timeout, t0, err)
      results[#results + 1] = { kind = kind, timeout = timeout or 0.3,
                                took = resilnet.now() - t0,
                                code = err and err.code }
    end
    local function opts(i)
      local t = timeouts[i % #timeouts + 1]
      return t and { timeout = t } or nil, t
    end
    local probe = H.lateness_probe()

    H.go(function()
      -- Warm the connections first: the deadline counts connect time too,
      -- which is not what is measured here.
      resilnet.sleep(0)
      local pending = 0
      -- 400 calls from tasks, each task making two in a row: the second
      -- starts inside the first one's expiry.
      for i = 1, 200 do
        pending = pending + 1
        resilnet.spawn(function()
          resilnet.sleep((i % 40) * 0.004)
          for round = 1, 2 do
            local o, t = opts(i + 2 * round)
            local t0 = resilnet.now()
            local _, err = pool:call("t" .. i, o)
            record("task", t, t0, err)
          end
          pending = pending - 1
        end)
      end
      -- 600 from callbacks: 300 chains of two, the second sent from the
      -- first one's callback, that is, from inside its expiry.
      for i = 1, 300 do
        pending = pending + 1
        resilnet.spawn(function()
          resilnet.sleep((i % 50) * 0.003)
          local o1, t1 = opts(i)
          local t0 = resilnet.now()
          assert(pool:send("c" .. i, o1, function(_, err)
            record("callback", t1, t0, err)
            local o2, t2 = opts(i + 2) -- lane after lane, heap after heap
            local t00 = resilnet.now()
            assert(pool:send("e" .. i, o2, function(_, err2)
              record("expiry", t2, t00, err2)
              pending = pending - 1
            end))
          end))
        end)
      end
      local t0 = resilnet.now()
      while pending > 0 and resilnet.now() - t0 < 10 do
        resilnet.sleep(0.01)
      end
      probe.running = false
    end)

    assert.equal(1000, #results)
    local worst, worst_kind = 0, nil
    for _, r in ipairs(results) do
      assert.equal("ETIMEDOUT", r.code)
      -- Never early (the loop clock has millisecond steps) ...
      assert.is_true(r.took >= r.timeout - 0.002,
                     r.kind .. " ended early: " .. r.took)
      local late = r.took - r.timeout
      if late > worst then worst, worst_kind = late, r.kind end
    end
    -- ... and never later than 20 ms past what the loop itself was late.
    print(string.format("deadlines: worst %.1f ms late (%s), loop %.1f ms",
                        worst * 1000, tostring(worst_kind),
                        probe.worst * 1000))
    assert.is_true(worst <= 0.020 + probe.worst,
                   string.format("a %s call ended %.1f ms late (loop: %.1f)",
                                 tostring(worst_kind), worst * 1000,
                                 probe.worst * 1000))
  end)
end)
