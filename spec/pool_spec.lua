-- Pools against resilnet's own server: every protocol, pipelining, timeouts,
-- refused endpoints, option errors, closing.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

-- An echo server and a pool on it; codec options go to both, pool_opts
-- to the pool only.
local function echo_pair(protocol, codec, pool_opts)
  local sopts, popts = { protocol = protocol }, { protocol = protocol }
  for k, v in pairs(codec or {}) do sopts[k], popts[k] = v, v end
  for k, v in pairs(pool_opts or {}) do popts[k] = v end
  local _, ep = H.server(sopts)
  popts.endpoints = { ep }
  return H.pool(popts)
end

describe("pool", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  describe("round trips", function()
    it("line", function()
      local pool = echo_pair("line")
      assert.equal("hello", pool:call("hello"))
      assert.equal("", pool:call(""))
      assert.equal("tab\tand\rcr", pool:call("tab\tand\rcr"))
    end)

    it("line with a custom delimiter", function()
      local pool = echo_pair("line", { delimiter = "\r\n" })
      assert.equal("one\ntwo", pool:call("one\ntwo"))
    end)

    it("raises when a line request contains the delimiter", function()
      local pool = echo_pair("line")
      assert.has_error(function() pool:call("a\nb") end)
    end)

    for _, bytes in ipairs { 1, 2, 4, 8 } do
      it("length with a " .. bytes .. "-byte prefix", function()
        local pool = echo_pair("length", { length_bytes = bytes })
        local binary = "\0\1\2\n\r\255" .. string.rep("x", 200)
        assert.equal(binary, pool:call(binary))
        assert.equal("", pool:call(""))
        if bytes > 1 then
          local big = string.rep("abcdefgh", 7000)
          local reply, err = pool:call(big)
          assert.is_nil(err)
          assert.equal(#big, #reply)
          assert.is_true(big == reply)
        end
      end)
    end

    it("length: a body too long for a 1-byte prefix fails without sending",
       function()
      local pool = echo_pair("length", { length_bytes = 1 })
      local reply, err = pool:call(string.rep("x", 256))
      assert.is_nil(reply)
      assert.equal("EFRAMESIZE", err.code)
      assert.is_false(err.maybe_executed)
    end)

    it("resp: arrays of strings and numbers, replies of every shape",
       function()
      local seen
      local _, ep = H.server {
        handler = function(req)
          seen = req
          local cmd = req[1]
          if cmd == "ECHO" then return req[2] end
          if cmd == "INT" then return 42 end
          if cmd == "FLOAT" then return 0.1 end
          if cmd == "NULL" then return resilnet.null end
          if cmd == "NIL" then return nil end
          if cmd == "BOOL" then return true end
          if cmd == "NESTED" then
            return { "a", { 1, { resilnet.null, "deep" } }, {} }
          end
          if cmd == "ERR" then error("no such thing", 0) end
          if cmd == "MAP" then return { a = 1 } end
          return req
        end,
      }
      local pool = H.pool { endpoints = { ep } }

      local args = { "SET", "k", 1.5, 42, -7, 1e300, 0.1 }
      local reply = pool:call(args)
      assert.same({ "SET", "k", "1.5", "42", "-7", "1e+300", "0.1" }, reply)
      assert.same(reply, seen)
      assert.equal("x y", pool:call { "ECHO", "x y" })
      assert.equal("bin\0\r\n", pool:call { "ECHO", "bin\0\r\n" })
      assert.equal("", pool:call { "ECHO", "" })
      local long = ("$12\r\n"):rep(1000)
      assert.equal(long, pool:call { "ECHO", long })
      assert.equal(42, pool:call { "INT" })
      assert.equal("0.1", pool:call { "FLOAT" })
      assert.equal(resilnet.null, pool:call { "NULL" })
      assert.equal(resilnet.null, pool:call { "NIL" })
      assert.equal(1, pool:call { "BOOL" })
      assert.same({ "a", { 1, { resilnet.null, "deep" } }, {} },
                  pool:call { "NESTED" })
      -- a string request is one bulk string
      assert.same({ "PLAIN" }, pool:call("PLAIN"))

      local r, err = pool:call { "ERR" }
      assert.is_nil(r)
      assert.equal("EREPLY", err.code)
      assert.equal("ERR no such thing", err.message)
      assert.is_true(err.maybe_executed)

      r, err = pool:call { "MAP" }
      assert.is_nil(r)
      assert.equal("EREPLY", err.code)
      assert.matches("cannot encode the reply", err.message)
    end)

    it("resp: an error object returned by a handler is an error reply",
       function()
      local _, ep = H.server {
        handler = function(req)
          return nil, { code = "ENOPE", message = "plain table" }
        end,
      }
      local pool = H.pool { endpoints = { ep } }
      local r, err = pool:call { "X" }
      assert.is_nil(r)
      assert.equal("EREPLY", err.code)
      assert.matches("^ERR ", err.message)
    end)

    it("resp: forwards an upstream error reply unchanged", function()
      local _, up = H.server {
        handler = function() error("WRONGTYPE not a list", 0) end,
      }
      local upstream = H.pool { endpoints = { up } }
      local _, ep = H.server {
        handler = function(req) return upstream:call(req) end,
      }
      local pool = H.pool { endpoints = { ep } }
      local r, err = pool:call { "LPUSH", "k", "v" }
      assert.is_nil(r)
      assert.equal("ERR WRONGTYPE not a list", err.message)
    end)

    it("rejects requests that are not strings or arrays", function()
      local pool = echo_pair("resp")
      assert.has_error(function() pool:call(42) end)
      assert.has_error(function() pool:call {} end)
      assert.has_error(function() pool:call { "SET", true } end,
                       "resilnet: request[2] is a boolean; expected a "
                       .. "string or a number")
      local line = echo_pair("line")
      assert.has_error(function() line:call { "a" } end)
    end)

    it("refuses an rnp max_frame under 128, what a HELLO must announce",
       function()
      -- It used to be announced anyway: every rnp server refused the
      -- HELLO, so every connect failed (docs/protocol.md section 6).
      assert.has_error(function()
        resilnet.pool { endpoints = { "127.0.0.1:1" }, protocol = "rnp",
                        max_frame = 127 }
      end, "resilnet.pool: option 'max_frame' must be at least 128 with "
           .. "protocol 'rnp' (the least a HELLO may announce)")
      local pool = resilnet.pool { endpoints = { "127.0.0.1:1" },
                                   protocol = "rnp", max_frame = 128 }
      pool:close()
    end)

    it("calls from many tasks at once", function()
      local pool = echo_pair("line", nil, { size = 4 })
      local replies = H.calls_at_once(pool, 50)
      for i = 1, 50 do assert.equal("r" .. i, replies[i]) end
    end)
  end)

  describe("pipelining on one connection", function()
    local N = 10000

    local function counting_pair(protocol)
      local executed = 0
      local _, ep = H.server {
        protocol = protocol,
        max_concurrent = N,
        handler = function(req)
          executed = executed + 1
          return req
        end,
      }
      local pool = H.pool { endpoints = { ep }, protocol = protocol,
                            size = 1, max_pending = N, timeout = 30 }
      return pool, function() return executed end
    end

    it("completes 10,000 calls from tasks, each exactly once", function()
      local pool, executed = counting_pair("line")
      local count, wrong, finished = {}, 0, 0
      H.go(function()
        for i = 1, N do
          resilnet.spawn(function()
            local reply, err = pool:call(tostring(i))
            count[i] = (count[i] or 0) + 1
            if reply ~= tostring(i) then wrong = wrong + 1; print(err) end
            finished = finished + 1
          end)
        end
        while finished < N do resilnet.sleep(0.001) end
      end, 60)
      assert.equal(0, wrong)
      for i = 1, N do assert.equal(1, count[i]) end
      assert.equal(N, executed())
      local stats = pool:stats()
      assert.equal(1, stats.connects)
      assert.equal(N, stats.calls)
      assert.equal(N, stats.completed)
    end)

    it("completes 10,000 calls from callbacks, each exactly once", function()
      local pool, executed = counting_pair("resp")
      local count, wrong, finished = {}, 0, 0
      for i = 1, N do
        assert(pool:send({ "ECHO", i }, nil, function(reply, err)
          count[i] = (count[i] or 0) + 1
          if not reply or reply[2] ~= tostring(i) then
            wrong = wrong + 1
          end
          finished = finished + 1
        end))
      end
      H.go(function()
        while finished < N do resilnet.sleep(0.001) end
      end, 60)
      assert.equal(0, wrong)
      for i = 1, N do assert.equal(1, count[i]) end
      assert.equal(N, executed())
      assert.equal(1, pool:stats().connects)
    end)
  end)

  describe("failures", function()
    it("times out a sent call with ETIMEDOUT, maybe executed", function()
      local _, ep = H.server {
        protocol = "line",
        handler = function(req) resilnet.sleep(0.3); return req end,
      }
      local pool = H.pool { endpoints = { ep }, protocol = "line" }
      local t0 = resilnet.now()
      local reply, err = pool:call("slow", { timeout = 0.05 })
      local elapsed = resilnet.now() - t0
      assert.is_nil(reply)
      assert.equal("ETIMEDOUT", err.code)
      assert.is_true(err.maybe_executed)
      assert.equal(1, err.attempts)
      assert.equal(ep, err.endpoint)
      assert.is_true(elapsed >= 0.045 and elapsed < 0.25)
      assert.truthy(resilnet.is_error(err))
      assert.matches("^ETIMEDOUT: .*%(" .. ep:gsub("%p", "%%%0")
                     .. ", 1 attempt, may have executed%)$", tostring(err))
    end)

    it("counts a deadline from the call, not from a stale loop clock",
       function()
      local _, ep = H.server {
        protocol = "line",
        handler = function(req) resilnet.sleep(0.3); return req end,
      }
      local pool = H.pool { endpoints = { ep }, protocol = "line" }
      assert.equal("warm", pool:call("warm", { timeout = 1 }) and "warm")
      local busy = resilnet.now() + 0.05
      while resilnet.now() < busy do end -- outside the loop: its clock stalls
      local t0 = resilnet.now()
      local _, err = pool:call("slow", { timeout = 0.05 })
      assert.equal("ETIMEDOUT", err.code)
      assert.is_true(resilnet.now() - t0 >= 0.045)
    end)

    it("uses the pool's timeout by default", function()
      local _, ep = H.server {
        protocol = "line",
        handler = function(req) resilnet.sleep(0.3); return req end,
      }
      local pool = H.pool { endpoints = { ep }, protocol = "line",
                            timeout = 0.05 }
      local _, err = pool:call("slow")
      assert.equal("ETIMEDOUT", err.code)
    end)

    it("fails on a refused endpoint with ECONNREFUSED, not executed",
       function()
      local ep = H.refused_endpoint()
      local pool = H.pool { endpoints = { ep }, protocol = "line" }
      local reply, err = pool:call("x", { timeout = 2 })
      assert.is_nil(reply)
      assert.equal("ECONNREFUSED", err.code)
      assert.is_false(err.maybe_executed)
      assert.matches("not executed", tostring(err))
    end)

    it("reconnects at once after reset_backoff", function()
      local ep = H.refused_endpoint()
      local pool = H.pool { endpoints = { ep }, protocol = "line",
                            reconnect = { initial = 10, max = 10 } }
      local _, err = pool:call("x", { timeout = 0.2 })
      assert.equal("ECONNREFUSED", err.code)
      H.server { listen = ep, protocol = "line" } -- the server is back
      local got
      H.go(function()
        resilnet.spawn(function() got = pool:call("y", { timeout = 5 }) end)
        resilnet.sleep(0.05)
        assert.is_nil(got) -- still backing off (10 s)
        local t0 = resilnet.now()
        pool:reset_backoff()
        while not got and resilnet.now() - t0 < 2 do resilnet.sleep(0.005) end
      end)
      assert.equal("y", got)
    end)

    it("reports ECLOSED once closed", function()
      local pool = echo_pair("line")
      assert.equal("a", pool:call("a"))
      assert.is_true(pool:close())
      assert.is_true(pool:close()) -- twice is fine
      local reply, err = pool:call("b")
      assert.is_nil(reply)
      assert.equal("ECLOSED", err.code)
      assert.is_false(err.maybe_executed)
      local ok, err2 = pool:send("c", nil, function() error("never") end)
      assert.is_nil(ok)
      assert.equal("ECLOSED", err2.code)
      assert.is_true(pool:stats().closed)
    end)

    -- pool:send(request, cb) is sent by the binding without the facade's
    -- Lua frame; every answer must stay the facade's: the reply to cb,
    -- ECLOSED, the raise on a bad request, on a callback that is none,
    -- and on a self that is no pool.
    it("pool:send(request, cb) answers as the facade does", function()
      local pool = echo_pair("line")
      local got, gerr, n = nil, "unset", 0
      H.go(function()
        assert.is_true(pool:send("hi", function(reply, err)
          got, gerr, n = reply, err, n + 1
        end))
        local t0 = resilnet.now()
        while n == 0 and resilnet.now() - t0 < 2 do resilnet.sleep(0.005) end
      end)
      assert.equal("hi", got)
      assert.is_nil(gerr)
      assert.equal(1, n)
      local ok, err = pcall(pool.send, pool, 42, function() end)
      assert.is_false(ok)
      assert.matches("the request must be a string or a table, got number",
                     err)
      ok, err = pcall(pool.send, pool, "x", "nope")
      assert.is_false(ok)
      assert.matches("pool:send: expected a callback function, got string",
                     err)
      -- Regressions (review): the two-argument form's non-function named
      -- nil, and the facade's errors blamed the binding, not the caller.
      local function send_bad_option()
        return pool:send("x", { bogus = 1 }, function() end)
      end
      ok, err = pcall(send_bad_option)
      assert.is_false(ok)
      assert.matches("unknown option 'bogus'", err)
      if not jit then assert.matches("pool_spec.lua:%d+:", err) end
      H.go(function()
        -- (On Lua 5.1 no wait can be made inside pcall: refused first.)
        local called, cerr = pcall(pool.call, pool)
        assert.is_false(called)
        assert.matches((_VERSION == "Lua 5.1" and not jit)
                       and "cannot wait here"
                       or "the request must be a string or a table, got nil",
                       cerr)
      end)
      ok, err = pcall(pool.send, {}, "x", function() end)
      assert.is_false(ok)
      assert.matches("resilnet.pool expected", err)
      ok, err = pcall(pool.send, { _h = io.stdout }, "x", function() end)
      assert.is_false(ok)
      assert.matches("resilnet.pool expected", err)
      assert.is_true(pool:close())
      local sent, err2 = pool:send("c", function() error("never") end)
      assert.is_nil(sent)
      assert.equal("ECLOSED", err2.code)
    end)

    it("fails calls still waiting for a connection when closed", function()
      local _, ep = H.server { protocol = "line" }
      local pool = resilnet.pool { endpoints = { ep }, protocol = "line" }
      local results = {}
      for i = 1, 3 do
        pool:send("x", nil, function(_, err) results[i] = err.code end)
      end
      pool:close()
      assert.same({ "ECLOSED", "ECLOSED", "ECLOSED" }, results)
    end)

    it("fails waiting calls when a task closes the pool", function()
      local _, ep = H.server { protocol = "line" }
      local pool = resilnet.pool { endpoints = { ep }, protocol = "line" }
      local codes, callback_code = {}, nil
      H.go(function()
        for i = 1, 3 do
          resilnet.spawn(function()
            local _, err = pool:call("x")
            codes[i] = err and err.code
          end)
        end
        pool:send("x", nil, function(_, err) callback_code = err.code end)
        -- Timers started in one turn fire together in the next: the
        -- tasks have called and wait for the connection still opening.
        resilnet.sleep(0)
        assert.equal(4, pool:stats().pending)
        -- closing fails them from inside this task: their tasks and the
        -- callback are resumed and called while this task runs
        pool:close()
      end)
      assert.same({ "ECLOSED", "ECLOSED", "ECLOSED" }, codes)
      assert.equal("ECLOSED", callback_code)
    end)

    it("drains calls in flight on close{drain}", function()
      local _, ep = H.server {
        protocol = "line",
        handler = function(req) resilnet.sleep(0.05); return req end,
      }
      local pool = resilnet.pool { endpoints = { ep }, protocol = "line" }
      local got
      H.go(function()
        resilnet.spawn(function() got = pool:call("late") end)
        resilnet.sleep(0.02) -- the call is on the wire
        pool:close { drain = 1 }
      end)
      assert.equal("late", got)
    end)

    -- Regression (issue 14): a handler that closed the pool while the
    -- retry scheduler or the hedge timer was half-way through moving a
    -- call freed the pool under it (ASan: use after free) or left a call
    -- parked forever. Every callback must run exactly once.
    for _, event in ipairs { "state", "retry", "budget", "overload", "eject",
                             "resolve" } do
      for _, mix in ipairs { "drop", "hold" } do
        it("closes from inside a " .. event .. " handler (" .. mix .. ")",
           function()
          -- "drop": every request reset on its way (sent, then lost:
          -- retries); "hold": answered after the deadline (hedges).
          local _, ep = H.server {
            protocol = "line",
            handler = function(req)
              if req == "hold" then resilnet.sleep(0.5) end
              return req
            end,
          }
          if mix == "drop" then
            local px = H.track(resilnet.proxy { listen = "127.0.0.1:0",
                                                upstream = ep,
                                                protocol = "line" })
            px:rule { kind = "fail_first", n = 100000, action = "rst" }
            ep = px:endpoint()
          end
          local pool = resilnet.pool {
            endpoints = { ep, H.refused_endpoint() }, protocol = "line",
            timeout = 0.4, size = 4, max_pending = 50, heartbeat = false,
            reconnect = { initial = 0.005, max = 0.02 },
            retry = { attempts = 3, initial = 0.04, max = 0.08,
                      budget = { tokens = 6, ratio = 0.1 } },
            hedge = { delay = 0.01, max = 2 },
            eject = { failures = 1, time = 0.05, max_time = 0.1 },
            resolve_ttl = 0,
          }
          local closed_in_handler = 0
          pool:on(event, function()
            if closed_in_handler == 0 then
              closed_in_handler = 1
              assert.is_true(pool:close())
            end
          end)
          local fired, accepted = {}, 0
          for i = 1, 60 do
            local ok = pool:send(i % 3 == 0 and "echo" or mix,
                                 { idempotent = i % 3 ~= 0 },
                                 function() fired[i] = (fired[i] or 0) + 1 end)
            if ok then accepted = accepted + 1 end
          end
          H.go(function()
            local t0 = resilnet.now()
            while closed_in_handler == 0 and resilnet.now() - t0 < 3 do
              resilnet.sleep(0.01)
            end
            pool:close() -- waits for the close the handler started
          end)
          assert.equal(1, closed_in_handler)
          local n = 0
          for i = 1, 60 do
            assert.is_true(fired[i] == nil or fired[i] == 1)
            n = n + (fired[i] or 0)
          end
          assert.equal(accepted, n)
          assert.is_true(pool:stats().closed)
        end)
      end
    end

    it("fails past max_pending with EOVERLOAD", function()
      local _, ep = H.server { protocol = "line" }
      local pool = H.pool { endpoints = { ep }, protocol = "line",
                            max_pending = 2, size = 1 }
      local codes = {}
      for i = 1, 5 do
        local ok, err = pool:send("x", nil, function() end)
        codes[i] = ok and "ok" or err.code
      end
      assert.equal("EOVERLOAD", codes[5])
      H.go(function() pool:call("y") end)
    end)

    -- issue 14, defect 10: an EOVERLOAD from max_in_flight said "too many
    -- calls pending".
    it("names the limit behind an EOVERLOAD", function()
      local _, ep = H.server { protocol = "line" }
      local pool = H.pool { endpoints = { ep }, protocol = "line",
                            size = 1, max_in_flight = 1 }
      H.go(function() assert.equal("warm", pool:call("warm")) end)
      assert.is_true(pool:send("x", nil, function() end))
      local ok, err = pool:send("y", nil, function() end)
      assert.is_nil(ok)
      assert.equal("EOVERLOAD", err.code)
      assert.is_false(err.maybe_executed)
      assert.matches("in flight", err.message)
      assert.matches("max_in_flight", err.message)
      assert.is_nil(err.message:find("pending", 1, true))

      local waiting = H.pool { endpoints = { ep }, protocol = "line",
                               size = 1, max_pending = 1 }
      assert.is_true(waiting:send("a", nil, function() end))
      ok, err = waiting:send("b", nil, function() end)
      assert.is_nil(ok)
      assert.equal("EOVERLOAD", err.code)
      assert.matches("max_pending", err.message)
      H.go(function() pool:call("y"); waiting:call("c") end)
    end)
  end)

  describe("options", function()
    local ep = "127.0.0.1:1"
    local function err_of(fn)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      return err
    end

    it("name unknown options", function()
      assert.matches("resilnet.pool: unknown option 'sise'", err_of(function()
        resilnet.pool { endpoints = { ep }, sise = 8 }
      end))
      assert.matches("unknown option 'retry.atempts'", err_of(function()
        resilnet.pool { endpoints = { ep }, retry = { atempts = 2 } }
      end))
    end)

    it("name the option and the expected type", function()
      assert.matches("option 'size' must be an integer >= 1, got '8'",
                     err_of(function()
                       resilnet.pool { endpoints = { ep }, size = "8" }
                     end))
      assert.matches("option 'protocol' must be one of",
                     err_of(function()
                       resilnet.pool { endpoints = { ep }, protocol = "http" }
                     end))
      assert.matches("option 'endpoints' must be a non%-empty array",
                     err_of(function() resilnet.pool { endpoints = {} } end))
      assert.matches("option 'endpoints' is required",
                     err_of(function() resilnet.pool {} end))
      assert.matches("option 'timeout' must be a number > 0",
                     err_of(function()
                       resilnet.pool { endpoints = { ep }, timeout = 0 }
                     end))
      assert.matches("option 'length_bytes' must be 1, 2, 4 or 8",
                     err_of(function()
                       resilnet.pool { endpoints = { ep },
                                       protocol = "length", length_bytes = 3 }
                     end))
      assert.matches("option 'heartbeat' must be a table or false",
                     err_of(function()
                       resilnet.pool { endpoints = { ep }, heartbeat = true }
                     end))
      assert.matches("option 'retry.budget.ratio' must be",
                     err_of(function()
                       resilnet.pool { endpoints = { ep },
                                       retry = { budget = { ratio = 2 } } }
                     end))
      assert.matches("option 'delimiter' applies only to protocol 'line'",
                     err_of(function()
                       resilnet.pool { endpoints = { ep }, delimiter = "\n" }
                     end))
      assert.matches("bad endpoint 'nope'", err_of(function()
        resilnet.pool { endpoints = { "nope" } }
      end))
      assert.matches("expected a table of options", err_of(function()
        resilnet.pool("127.0.0.1:1")
      end))
    end)

    it("blame the caller's line", function()
      local err = err_of(function()
        resilnet.pool { endpoints = { ep }, sise = 8 }
      end)
      assert.matches("pool_spec.lua:%d+:", err)
    end)

    it("accept every documented option", function()
      local pool = resilnet.pool {
        endpoints = { ep, "[::1]:2", "unix:/tmp/none.sock" },
        protocol = "line", size = 2, min_idle = 0, max_pending = 10,
        connect_timeout = 1, idle_timeout = 30, max_lifetime = 0,
        timeout = 2, max_frame = 1024, delimiter = "\r\n",
        write_high_water = 65536,
        heartbeat = { interval = 1, timeout = 3, ping = "ping" },
        keepalive = { idle = 20, interval = 5, count = 3, user_timeout = 20 },
        reconnect = { initial = 0.1, multiplier = 1.6, jitter = 0.2,
                      max = 30 },
        retry = { attempts = 3, budget = { tokens = 10, ratio = 0.1 } },
        hedge = { delay = 0.05, max = 2 },
      }
      pool:close()
      pool = resilnet.pool { endpoints = { ep }, heartbeat = false,
                             keepalive = false, hedge = false,
                             retry = false }
      pool:close()
    end)

    it("check per-call options", function()
      local pool = H.pool { endpoints = { ep } }
      assert.matches("pool:call: unknown option 'idempotnet'",
                     err_of(function()
                       pool:call("x", { idempotnet = true })
                     end))
      assert.matches("option 'timeout' must be a number > 0",
                     err_of(function() pool:call("x", { timeout = -1 }) end))
      assert.matches("option 'idempotent' must be a boolean",
                     err_of(function()
                       pool:call("x", { idempotent = "yes" })
                     end))
      assert.matches("pool:send: expected a callback function",
                     err_of(function() pool:send("x", {}) end))
      assert.matches("pool:on: unknown event 'sate'",
                     err_of(function() pool:on("sate", print) end))
    end)

    it("lists every option in resilnet._options", function()
      local names = {}
      for _, e in ipairs(resilnet._options.pool) do names[e[1]] = true end
      for _, n in ipairs { "endpoints", "protocol", "size", "min_idle",
                           "max_pending", "connect_timeout", "idle_timeout",
                           "max_lifetime", "timeout", "max_frame",
                           "delimiter", "length_bytes", "write_high_water",
                           "heartbeat", "keepalive", "reconnect", "retry",
                           "hedge" } do
        assert.is_true(names[n], n)
      end
    end)
  end)

  describe("events and stats", function()
    it("reports connection state changes", function()
      local pool = echo_pair("line")
      local conn_states, ep_states = {}, {}
      pool:on("state", function(ev)
        assert.equal("string", type(ev.endpoint))
        assert.equal("string", type(ev.reason))
        if ev.connection then
          assert.equal("number", type(ev.connection))
          conn_states[#conn_states + 1] = ev.state
        else
          ep_states[#ep_states + 1] = ev.state
        end
      end)
      assert.equal("x", pool:call("x"))
      assert.same({ "connecting", "ready" }, conn_states)
      assert.same({ "connecting", "ready" }, ep_states)
    end)

    it("counts calls", function()
      local pool = echo_pair("line")
      pool:call("a")
      pool:call("b")
      local s = pool:stats()
      assert.equal(2, s.calls)
      assert.equal(2, s.completed)
      assert.equal(0, s.failed)
      assert.equal(0, s.pending)
      assert.is_false(s.closed)
    end)
  end)

  describe("lifetimes", function()
    it("keeps a busy pool alive when its last reference is dropped",
       function()
      local _, ep = H.server { protocol = "line" }
      local got
      do
        local pool = resilnet.pool { endpoints = { ep }, protocol = "line" }
        pool:send("kept", nil, function(reply) got = reply end)
      end
      collectgarbage()
      collectgarbage()
      H.go(function()
        for _ = 1, 1000 do
          if got then break end
          resilnet.sleep(0.001)
        end
      end)
      assert.equal("kept", got)
      collectgarbage()
      collectgarbage()
    end)
  end)
end)
