-- Issue 7 (resilnet from Lua, fast): a reply now resumes its task, and a
-- callback now runs, from the binding rather than through the facade's
-- dispatcher; a call's target is held in a reused slot; call options are
-- checked by a fast path. What those paths must keep doing.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

describe("dispatch from the binding (issue 7)", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  local function line_pool()
    local _, ep = H.server { protocol = "line" }
    return H.pool { endpoints = { ep }, protocol = "line" }
  end

  -- Runs the loop (through H.go) until failing() says the error was
  -- raised; returns what H.go raised.
  local function error_of_run(failing)
    local ok, err = pcall(H.go, function()
      while not failing() do resilnet.sleep(0.005) end
    end)
    assert.is_false(ok, "run() did not re-raise the task's error")
    return err
  end

  -- Regression (issue 14): an event fired inside pool:send, made outside
  -- the loop, ran its handler while the core was half-way through placing
  -- the call; a waiting function there ran the loop from inside the core
  -- (pool:close() then freed the pool under rn_pool_call: ASan, use after
  -- free). It is a callback like any other: waiting raises, close starts.
  it("a handler run inside pool:send outside the loop cannot wait",
     function()
    local pool = line_pool()
    local waited
    pool:on("state", function()
      if waited == nil then
        waited = select(2, pcall(resilnet.sleep, 0))
        assert.is_true(pool:close())
      end
    end)
    local code
    assert.is_true(pool:send("x", nil, function(_, err) code = err.code end))
    assert.matches("cannot wait inside a callback", waited)
    H.go(function() assert.is_true(pool:close()) end)
    assert.equal("ECLOSED", code) -- accepted, then failed by the close
    assert.is_true(pool:stats().closed)
  end)

  it("re-raises an error a task raises after a reply resumed it",
     function()
    local pool = line_pool()
    local raised = false
    local function after_the_reply() raised = true error("boom late") end
    resilnet.spawn(function()
      assert.equal("x", pool:call("x"))
      after_the_reply()
    end)
    local err = error_of_run(function() return raised end)
    assert.matches("boom late", err)
    assert.matches("stack traceback", err)
    assert.matches("after_the_reply", err)
  end)

  it("re-raises an error a task raises after a sleep, and non-string "
     .. "errors as they are", function()
    local value = { why = "after a sleep" }
    local raised = false
    resilnet.spawn(function()
      resilnet.sleep(0.001)
      raised = true
      error(value)
    end)
    assert.equal(value, error_of_run(function() return raised end))
  end)

  it("re-raises a table a callback raises, as it is", function()
    local pool = line_pool()
    local value = { why = "in a callback" }
    local raised = false
    assert.is_true(pool:send("x", function()
      raised = true
      error(value)
    end))
    assert.equal(value, error_of_run(function() return raised end))
  end)

  it("gives every task and callback its own reply, slots reused",
     function()
    local pool = line_pool()
    local seen, wrong = 0, {}
    local function check(want, reply, err)
      seen = seen + 1
      if reply ~= want then wrong[#wrong + 1] = { want, reply, err } end
    end
    H.go(function()
      -- 64 chains of sends, each callback sending the next request from
      -- inside the dispatch (the slot it frees is taken again at once),
      -- and 64 tasks calling, all in flight together.
      local chains = 0
      for c = 1, 64 do
        chains = chains + 1
        local n = 0
        local function on_reply(reply, err)
          check("s" .. c .. "." .. n, reply, err)
          n = n + 1
          if n < 20 then
            assert(pool:send("s" .. c .. "." .. n, on_reply))
          else
            chains = chains - 1
          end
        end
        assert(pool:send("s" .. c .. "." .. n, nil, on_reply))
      end
      local tasks = 0
      for t = 1, 64 do
        tasks = tasks + 1
        resilnet.spawn(function()
          for i = 1, 20 do
            check("t" .. t .. "." .. i, pool:call("t" .. t .. "." .. i))
          end
          tasks = tasks - 1
        end)
      end
      while chains + tasks > 0 do resilnet.sleep(0.005) end
    end)
    assert.same({}, wrong)
    assert.equal(2 * 64 * 20, seen)
  end)

  -- Issue 20: the replies one read brings wait until the read is done and
  -- are then dispatched in one protected call. A raw peer answers eight
  -- pipelined lines with one write; four callbacks and four tasks wait.
  local function one_read_peer(n)
    local pending = ""
    return H.raw_peer(function(chunk)
      pending = pending .. chunk
      local lines = {}
      for line in pending:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
      if #lines < n then return "" end
      pending = ""
      return table.concat(lines, "\n") .. "\n"
    end)
  end

  it("dispatches the replies of one read in order, once each, after the "
     .. "core completed them all; an error in one loses none of the others",
     function()
    local peer = one_read_peer(8)
    local pool = H.pool { endpoints = { peer.endpoint }, protocol = "line",
                          size = 1 }
    local seen, completed_at_first = {}, nil
    local function saw(name, reply, err)
      seen[#seen + 1] = name .. "=" .. tostring(reply or err.code)
      if completed_at_first == nil then
        completed_at_first = pool:stats().completed
      end
    end
    local ok, err = pcall(H.go, function()
      for i = 1, 4 do
        assert(pool:send("c" .. i, function(reply, e)
          saw("c" .. i, reply, e)
          if i == 2 then error("boom in callback 2") end
        end))
      end
      for i = 1, 4 do
        resilnet.spawn(function()
          saw("t" .. i, pool:call("t" .. i))
          if i == 3 then error("boom in task 3") end
        end)
      end
      while #seen < 8 do resilnet.sleep(0.005) end
    end)
    assert.is_false(ok)
    assert.matches("boom in callback 2", err) -- the first error
    assert.same({ "c1=c1", "c2=c2", "c3=c3", "c4=c4",
                  "t1=t1", "t2=t2", "t3=t3", "t4=t4" }, seen)
    -- One read brought all eight: the core had completed every one of
    -- them before the first was dispatched.
    assert.equal(8, completed_at_first)
  end)

  it("dispatches what waits for the end of a read before an event the "
     .. "same read fires", function()
    -- The peer answers four lines and then sends a line longer than the
    -- pool's max_frame, in one write: the read that brings the replies
    -- also closes the connection (EFRAMESIZE), whose state event
    -- ("closed") must not overtake the replies that came before it.
    local pending = ""
    local peer = H.raw_peer(function(chunk)
      pending = pending .. chunk
      local _, n = pending:gsub("\n", "")
      if n < 4 then return "" end
      return "a\nb\nc\nd\n" .. ("x"):rep(200)
    end)
    local pool = H.pool { endpoints = { peer.endpoint }, protocol = "line",
                          size = 1, max_frame = 64 }
    local order = {}
    H.go(function()
      pool:on("state", function(ev)
        if ev.state == "closed" then order[#order + 1] = "closed" end
      end)
      for i = 1, 4 do
        assert(pool:send("q" .. i, function(reply)
          order[#order + 1] = reply
        end))
      end
      while #order < 5 do resilnet.sleep(0.005) end
    end)
    assert.same({ "a", "b", "c", "d", "closed" }, order)
  end)

  it("replies through a server handler that waited on a pool", function()
    local pool = line_pool()
    local _, ep = H.server {
      protocol = "resp",
      handler = function(req)
        local reply = pool:call(req[2])
        if reply == "bad" then error("handler failed late") end
        return reply .. "!"
      end,
    }
    local client = H.pool { endpoints = { ep } }
    H.go(function()
      assert.equal("x!", client:call { "ECHO", "x" })
      local reply, err = client:call { "ECHO", "bad" }
      assert.is_nil(reply)
      assert.equal("EREPLY", err.code)
      assert.matches("handler failed late", err.message)
    end)
  end)

  -- Regression: a call made where its task could not be suspended (a C
  -- function in between: table.sort's comparator, or pcall on Lua 5.1)
  -- was sent, its yield failed, and its reply then resumed the task from
  -- its next wait: the next pool:call returned this call's reply.
  describe("a wait that cannot suspend its task", function()
    local function counting_pool()
      local seen = {}
      local _, ep = H.server { protocol = "line", handler = function(r)
        seen[r] = (seen[r] or 0) + 1
        return r
      end }
      return H.pool { endpoints = { ep }, protocol = "line" }, seen
    end

    it("is refused before it is sent, and the next call gets its own "
       .. "reply", function()
      local pool, seen = counting_pool()
      H.go(function()
        local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b)
          pool:call("stale")
          return a < b
        end)
        assert.is_false(ok)
        assert.matches("pool:call cannot wait here", err)
        assert.equal("second", pool:call("second"))
        assert.equal("third", pool:call("third"))
        assert.is_nil(seen.stale)
      end)
    end)

    it("a facade wait (sleep) is refused the same way, and no stale "
       .. "wake-up resumes the task later", function()
      local pool = counting_pool()
      H.go(function()
        local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b)
          resilnet.sleep(0.01)
          return a < b
        end)
        assert.is_false(ok)
        assert.matches("resilnet.sleep cannot wait here", err)
        -- Past the refused sleep's 10 ms: had its timer been started, it
        -- would have resumed this call's wait (or raised 'a task was
        -- resumed' through H.go).
        assert.equal("x", pool:call("x"))
        resilnet.sleep(0.05)
        assert.equal("y", pool:call("y"))
      end)
    end)

    it("inside pcall: refused on Lua 5.1, which cannot yield across it; "
       .. "waits elsewhere", function()
      local pool, seen = counting_pool()
      local puc51 = _VERSION == "Lua 5.1" and not rawget(_G, "jit")
      H.go(function()
        local ok, r = pcall(pool.call, pool, "in pcall")
        if puc51 then
          assert.is_false(ok)
          assert.matches("cannot wait here", r)
          assert.is_nil(seen["in pcall"])
        else
          assert.is_true(ok)
          assert.equal("in pcall", r)
        end
        assert.equal("after", pool:call("after"))
      end)
    end)
  end)

  it("applies options given per call, flat or nested", function()
    local _, slow = H.server {
      protocol = "line",
      handler = function(r) resilnet.sleep(0.3) return r end,
    }
    local pool = line_pool()
    local late = H.pool { endpoints = { slow }, protocol = "line" }
    H.go(function()
      assert.equal("a", pool:call("a", { idempotent = true, timeout = 1,
                                         attempts = 2,
                                         attempt_timeout = 0.5 }))
      assert.equal("b", pool:call("b", { idempotent = true,
                                         hedge = { delay = 0.01 } }))
      local t0 = resilnet.now()
      local reply, err = late:call("c", { timeout = 0.05 })
      assert.is_nil(reply)
      assert.equal("ETIMEDOUT", err.code)
      assert.is_true(resilnet.now() - t0 < 0.25)
      local done
      assert.is_true(late:send("d", { timeout = 0.05 }, function(r, e)
        done = { r, e }
      end))
      while not done do resilnet.sleep(0.005) end
      assert.is_nil(done[1])
      assert.equal("ETIMEDOUT", done[2].code)
      resilnet.sleep(0.3) -- the slow handlers finish before cleanup
    end)
  end)
end)
