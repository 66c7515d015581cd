-- The retry budget under an outage, counted by the server: with requests
-- failing, policy retries of idempotent calls stop at the budget, so the
-- attempts the server received stay within
--   (1 + ratio) x calls + tokens
-- (every call's own attempt, one retry per ratio earned by a success, and
-- the tokens the budget starts with). The numbers measured are printed.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local C = require "spec.helpers.counting_server"

local TOKENS, RATIO = 10, 0.1

for _, protocol in ipairs { "length", "resp" } do
  describe("retry budget (" .. protocol .. ")", function()
    local srv = C.serve(protocol)
    local serial = 0

    -- Runs `calls` idempotent calls from `tasks` tasks against the counting
    -- server with `mode` on the first `n` attempts of each call; returns
    -- the ledger, the outcomes and the budget events.
    local function outage(t)
      local pool = H.pool {
        protocol = protocol, heartbeat = false, timeout = 2,
        endpoints = { srv.endpoint },
        -- A server that never answers never resets the reconnect backoff
        -- (design §5); keep it short so that the calls, not the backoff,
        -- meet the budget.
        reconnect = { initial = 0.005, max = 0.02 },
        attempt_timeout = t.attempt_timeout,
        retry = { attempts = 3, budget = { tokens = TOKENS, ratio = RATIO } },
      }
      local budget_events, retries = {}, 0
      pool:on("budget", function(ev) budget_events[#budget_events + 1] = ev end)
      pool:on("retry", function() retries = retries + 1 end)
      serial = serial + 1
      local prefix = ("%s-b%d-"):format(protocol, serial)
      local replies, failures, done = 0, 0, 0
      local codes, unsent, failed_attempts, failed_retries = {}, {}, 0, 0
      local per_task = math.floor(t.calls / t.tasks)
      for k = 1, t.tasks do
        resilnet.spawn(function()
          for i = 1, per_task do
            local id = prefix .. k .. "." .. i
            local reply, err = pool:call(C.request(protocol, {
                                           t.mode, id, tostring(t.n),
                                           tostring(t.ms or 0) }),
                                         { idempotent = true })
            if reply then
              assert.equal("done " .. id, reply)
              replies = replies + 1
            else
              failures = failures + 1
              local what = err.code .. (err.maybe_executed and "" or " (not sent)")
              codes[what] = (codes[what] or 0) + 1
              if not err.maybe_executed then unsent[#unsent + 1] = id end
              failed_attempts = failed_attempts + err.attempts
              failed_retries = failed_retries + math.max(err.attempts - 1, 0)
            end
            done = done + 1
          end
        end)
      end
      H.go(function()
        for _ = 1, 6000 do
          if done == t.calls then return end
          resilnet.sleep(0.005)
        end
      end, 60)
      assert.equal(t.calls, done)
      local stats = pool:stats()
      pool:close()
      C.sync(srv)
      local ledger = C.read(srv)
      local attempts = 0
      for id, n in pairs(ledger.received) do
        if id:sub(1, #prefix) == prefix then attempts = attempts + n end
      end
      for _, id in ipairs(unsent) do -- maybe_executed = false is a promise
        assert.equal(nil, ledger.received[id], id .. " reached the server")
      end
      local bound = (1 + RATIO) * t.calls + TOKENS
      -- Attempts the client wrote: err.attempts of each failure, and for
      -- each reply its own attempt plus the retries that led to it.
      local written = failed_attempts + replies
                      + (stats.retries - failed_retries)
      local failed = {}
      for what, n in pairs(codes) do failed[#failed + 1] = n .. " " .. what end
      table.sort(failed)
      print(("\n[budget %s] %s: %d calls (%d tasks), %d attempts received "
             .. "by the server, %d written by the client, bound (1 + %.1f) "
             .. "x %d + %d = %.0f; %d "
             .. "replies, %d failures (%s), %d retries, %d budget events")
            :format(protocol, t.name, t.calls, t.tasks, attempts, written,
                    RATIO,
                    t.calls, TOKENS, bound, replies, failures,
                    table.concat(failed, ", "), retries,
                    #budget_events))
      assert.is_true(attempts <= bound,
                     ("%d attempts for %d calls: over the budget's bound %.0f")
                       :format(attempts, t.calls, bound))
      return { attempts = attempts, written = written, bound = bound,
               replies = replies, failures = failures,
               budget_events = budget_events, retries = stats.retries }
    end

    it("every request fails, calls one after another: retries stop "
       .. "once the budget is at half", function()
      local r = outage { name = "all fail, sequential", mode = "rst_read",
                         n = 99, calls = 100, tasks = 1 }
      assert.equal(0, r.replies)
      -- One request per connection, each read before the reset: the
      -- server saw every attempt. Each retry spends a token, none at or
      -- below half (5 of 10): 2 + 2 + 1 retries, then one attempt each
      -- (docs/retry-rules.md §3).
      assert.equal(r.written, r.attempts)
      assert.equal(105, r.attempts)
      assert.equal("exhausted", r.budget_events[1].state)
    end)

    it("every request times out (attempt_timeout), 20 tasks at once: "
       .. "each expiry spends a token, within the bound", function()
      -- Nothing is reset, so the server reads every attempt written.
      local r = outage { name = "all time out, concurrent", mode = "delay",
                         ms = 5000, attempt_timeout = 0.05, n = 99,
                         calls = 100, tasks = 20 }
      assert.equal(0, r.replies)
      assert.equal(r.written, r.attempts)
      assert.is_true(r.attempts > 100) -- some retries were made
    end)

    it("every first attempt fails (retries succeed and earn ratio): "
       .. "within the bound", function()
      local r = outage { name = "first attempt fails", mode = "rst_read",
                         n = 1, calls = 200, tasks = 1 }
      assert.equal(r.written, r.attempts)
      assert.is_true(r.failures > 0) -- the budget did stop retries
    end)

    it("every request fails, 20 tasks at once, pipelined on 8 "
       .. "connections: the server sees few attempts", function()
      -- Each reset loses every call pipelined on that connection, but the
      -- server read only the first: what it counts stays in the bound.
      outage { name = "all fail, concurrent", mode = "rst_read", n = 99,
               calls = 200, tasks = 20 }
    end)

    -- The same bound holds for what the client writes, however many calls
    -- each lost connection carried: every retry spends a token.
    it("every request fails, 20 tasks at once: the attempts the client "
       .. "writes stay within (1 + ratio) x calls + tokens", function()
      local r = outage { name = "all fail, concurrent (client side)",
                         mode = "rst_read", n = 99, calls = 200, tasks = 20 }
      assert.is_true(r.written <= r.bound,
                     ("%d attempts written for a bound of %.0f")
                       :format(r.written, r.bound))
    end)
  end)
end
