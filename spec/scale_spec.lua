-- Scale: 1,000 idle pooled connections with 100 ms heartbeats stay ready
-- for 10 seconds, and a call still succeeds afterwards. (Issue 3.)
--
-- The server is a child process (spec/helpers/server.lua), so this
-- process holds only the client's ~1,000 descriptors. cmake runs this file
-- on its own (spec-scale.*), not in the per-Lua spec runs: see
-- cmake/ResilnetTests.cmake.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local P = require "spec.helpers.process"

local N = 1000          -- connections, all to one endpoint
local INTERVAL = 0.1    -- heartbeat.interval
local WATCH = 10        -- seconds the idle connections are watched
local HOLD = 0.2        -- seconds a warm-up call keeps its connection busy
-- Idle connections to one endpoint share its heartbeat: the prober pings
-- once per INTERVAL, every other connection once per IDLE_PING_INTERVALS
-- of them (docs/operations.md). The bounds are generous (a loop carrying
-- a thousand pings a second, maybe under ASan, runs late) but tight
-- enough that pings stopping on part of the pool, or each connection
-- pinging every interval again, are caught.
local IDLE_PING_INTERVALS = 8
local MIN_PING_SHARE, MAX_PING_SHARE = 0.5, 1.5

-- The soft limit on open files must leave room for N connections here and
-- N accepted ones in the server child, which inherits it.
local function check_fd_limit()
  local f = assert(io.open("/proc/self/limits"))
  local text = f:read("*a")
  f:close()
  local soft = text:match("Max open files%s+(%S+)")
  local need = H.open_fds() + N + 100
  if soft ~= "unlimited" and (tonumber(soft) or 0) < need then
    error(("the scale spec needs %d open files, but the soft limit "
           .. "(ulimit -n) is %s: raise it, e.g. `ulimit -n 4096`, "
           .. "before running the specs"):format(need, tostring(soft)), 0)
  end
end

describe("scale", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("1,000 idle pooled connections with 100 ms heartbeats stay ready "
     .. "for 10 seconds", function()
    check_fd_limit()
    -- Room for thousands of connections and requests at once.
    local server = P.server { max_concurrent = 4096, backlog = 4096 }
    local ok, err = pcall(function()
      local ep = "127.0.0.1:" .. server.port
      local pool = H.pool {
        endpoints = { ep }, protocol = "resp",
        size = N, max_pending = 10 * N, timeout = 10,
        heartbeat = { interval = INTERVAL, timeout = 1 },
      }

      -- Every connection's state, from the events.
      local state, ready, closed = {}, 0, {}
      local endpoint_state
      pool:on("state", function(ev)
        if not ev.connection then -- the endpoint's own state
          endpoint_state = ev.state
          return
        end
        state[ev.connection] = ev.state
        if ev.state == "ready" then
          ready = ready + 1
        elseif ev.state == "closed" then
          closed[#closed + 1] = ("connection %d: %s (%s)")
            :format(ev.connection, tostring(ev.error), tostring(ev.reason))
        end
      end)

      -- Warm-up. Calls pipeline, so a pool grows only when a call has to
      -- queue behind another: keep every connection busy with a HOLD call
      -- and send one more, until N are open. (min_idle would open them one
      -- per housekeeping round, a second apart.)
      local holds, held, hold_errors = 0, 0, {}
      local function on_hold(reply, e)
        held = held + 1
        if reply ~= "held" then hold_errors[#hold_errors + 1] = tostring(e) end
      end
      H.go(function()
        local deadline = resilnet.now() + 60
        while ready < N and #closed == 0 and resilnet.now() < deadline do
          local s = pool:stats()
          if s.open < N then
            for _ = 1, s.idle + 1 do
              assert(pool:send({ "HOLD", HOLD }, nil, on_hold))
              holds = holds + 1
            end
          end
          resilnet.sleep(0.001)
        end
        -- The warm-up calls finish; the connections go idle.
        while held < holds and resilnet.now() < deadline do
          resilnet.sleep(0.01)
        end
      end, 90)
      assert.same({}, closed)
      assert.same({}, hold_errors)
      assert.equal(holds, held)
      assert.equal(N, ready)
      local s0 = pool:stats()
      assert.equal(N, s0.open)
      assert.equal(0, s0.in_flight)
      assert.equal(0, s0.pending)
      assert.equal(0, s0.dead_peers)

      -- Watch them for WATCH seconds.
      local first_problem
      local samples = 0
      local t0 = resilnet.now()
      local beats0 = s0.heartbeats
      local t1, s1
      H.go(function()
        while resilnet.now() - t0 < WATCH do
          resilnet.sleep(0.25)
          local s = pool:stats()
          samples = samples + 1
          local not_ready = 0
          for _, st in pairs(state) do
            if st ~= "ready" then not_ready = not_ready + 1 end
          end
          local problem
          if #closed > 0 then
            problem = #closed .. " closed, first " .. closed[1]
          elseif s.open ~= N then
            problem = "open = " .. s.open
          elseif s.dead_peers ~= 0 then
            problem = "dead_peers = " .. s.dead_peers
          elseif not_ready ~= 0 then
            problem = not_ready .. " connections not ready"
          elseif endpoint_state ~= "ready" then
            problem = "endpoint state " .. tostring(endpoint_state)
          end
          if problem and not first_problem then
            first_problem = ("after %.2f s: %s"):format(resilnet.now() - t0,
                                                        problem)
          end
        end
        t1, s1 = resilnet.now(), pool:stats()
      end, WATCH + 30)
      assert.is_nil(first_problem)
      assert.is_true(samples >= WATCH / 0.25 * 0.5,
                     "the watch took only " .. samples .. " samples")

      local elapsed = t1 - t0
      local expected = (N / IDLE_PING_INTERVALS + 1) * elapsed / INTERVAL
      local beats = s1.heartbeats - beats0
      assert.is_true(beats >= MIN_PING_SHARE * expected
                     and beats <= MAX_PING_SHARE * expected + N,
                     ("%d heartbeats in %.2f s on %d connections; about %.0f "
                      .. "expected"):format(beats, elapsed, N, expected))

      -- Still usable: calls succeed, on the connections already open.
      for i = 1, 10 do
        local reply, e = pool:call { "ECHO", "after" .. i }
        assert.equal("after" .. i, reply, tostring(e))
      end
      local s2 = pool:stats()
      assert.equal(N, s2.open)
      assert.equal(s1.connects, s2.connects)
      assert.equal(0, s2.dead_peers)

      pool:close() -- before the server goes: a clean close, not a reset
    end)
    server:close()
    if not ok then error(err, 0) end
  end)
end)
