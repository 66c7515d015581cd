-- pool:batch and pool:transaction (issue 19): several requests on one
-- connection in one write, the replies handed back together. Against a
-- real redis-server for resp (element errors, nil replies, MULTI/EXEC,
-- EXECABORT), and resilnet's own servers for line, length and rnp; a
-- scripted RESP server gives the one answer a batch alone cannot provoke
-- from Redis (EXEC answered nil, as after a WATCHed key changed).
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local R = require "spec.helpers.redis"
local wait_for = require "spec.helpers.wait"

local pool
R.describe("pool:batch on redis-server", function(p) pool = p end, function()
  it("answers each request in order; an error reply is that element's", function()
    local r = assert(pool:batch {
      { "SET", "a", "1" }, { "INCR", "a" }, { "GET", "missing" },
      { "LPUSH", "a", "x" }, { "GET", "a" },
    })
    assert.equal(5, r.n)
    assert.equal("OK", r[1])
    assert.equal(2, r[2])
    assert.equal(resilnet.null, r[3])
    assert.is_true(resilnet.is_error(r[4]))
    assert.equal("EREPLY", r[4].code)
    assert.matches("^WRONGTYPE", r[4].message)
    assert.is_true(r[4].maybe_executed)
    assert.equal(1, r[4].attempts)
    assert.equal("2", r[5]) -- the error stopped nothing after it
  end)

  it("works from a task, with options, and in the callback form", function()
    H.go(function()
      local r = assert(pool:batch({ { "INCR", "n" }, { "INCR", "n" } },
                                  { timeout = 2, idempotent = false }))
      assert.same({ 1, 2, n = 2 }, r)
    end)
    local got, fired = nil, 0
    assert(pool:batch({ { "INCR", "n" }, { "GET", "n" } }, function(r, err)
      fired = fired + 1
      got = r or err
    end))
    assert(pool:batch({ { "PING" } }, { timeout = 1 }, function(r)
      fired = fired + 1
      assert.equal("PONG", r[1])
    end))
    wait_for(function() return fired == 2 end, 5,
                                          "both callbacks")
    assert.same({ 3, "3", n = 2 }, got)
    assert.equal(4, pool:stats().calls) -- FLUSHALL, then 3 batches: one call each
  end)

  it("raises on bad input, naming what is wrong", function()
    assert.has_error(function() pool:batch("PING") end,
                     "pool:batch: expected an array of requests, got string")
    assert.has_error(function() pool:batch {} end)
    assert.has_error(function() pool:batch({ { "PING" } }, { hedge = false }) end,
                     "pool:batch: option 'hedge' does not apply to a batch")
    assert.has_error(function() pool:batch({ { "PING" } }, { timeot = 1 }) end)
    assert.has_error(function() pool:batch({ { "PING" } }, {}, 42) end,
                     "pool:batch: expected a callback function, got number")
    -- Each names the caller's line, not resilnet's or the test runner's.
    for _, bad in ipairs {
      function() pool:batch("PING") end,
      function() pool:batch {} end,
      function() pool:batch({ { "PING" } }, { hedge = false }) end,
      function() pool:batch({ { "PING" } }, { timeout = "soon" }) end,
      function() pool:batch({ { "PING" } }, 7) end,
      function() pool:batch({ { "PING" } }, {}, 42) end,
      function() pool:transaction({ { "INCR", "a" } }, { timeot = 1 }) end,
      function() pool:transaction({ { "INCR", "a" } }, { key = "k" },
                                  function() end) end,
    } do
      local ok, err = pcall(bad)
      assert.is_false(ok)
      assert.matches("^[^:]*batch_spec%.lua:%d+: pool:", err)
    end
    local many = {}
    for i = 1, 1025 do many[i] = { "PING" } end
    local ok, err = pcall(pool.batch, pool, many)
    assert.is_false(ok)
    assert.matches("max_batch", err)
    many[1025] = nil
    assert.equal(1024, assert(pool:batch(many)).n) -- the default holds 1024
    local small = H.pool { endpoints = pool.options.endpoints, max_batch = 2 }
    assert.has_error(function() small:batch { { "PING" }, { "PING" }, { "PING" } } end)
    assert.equal(2, assert(small:batch { { "PING" }, { "PING" } }).n)
  end)

  -- A table with a hole past its border ({ a, [3] = c }: # is 1) sent #t
  -- requests and left the rest out unsaid; pool:transaction likewise.
  it("refuses a batch or transaction with holes, naming the hole", function()
    local holed = { { "INCR", "h" } }
    holed[3] = { "INCR", "h" }
    for _, send in ipairs { pool.batch, pool.transaction } do
      local ok, err = pcall(send, pool, holed)
      assert.is_false(ok)
      assert.matches("requests%[2%] is nil but requests%[3%] is not", err)
    end
    assert.equal(resilnet.null, pool:call { "GET", "h" }) -- nothing sent
  end)

  -- pool:transaction's max_batch error said pool:batch and counted its
  -- MULTI and EXEC: it names pool:transaction and the caller's commands.
  it("a transaction past max_batch names itself and counts its commands", function()
    local small = H.pool { endpoints = pool.options.endpoints, max_batch = 4 }
    local ok, err = pcall(function()
      small:transaction { { "INCR", "m" }, { "INCR", "m" }, { "INCR", "m" } }
    end)
    assert.is_false(ok)
    assert.matches("batch_spec%.lua:%d+: pool:transaction: 3 commands are more "
                   .. "than the 2 a transaction may carry %(max_batch 4", err)
    assert.same({ 1, 2 }, assert(small:transaction { { "INCR", "m" },
                                                     { "INCR", "m" } }))
  end)

  it("runs MULTI ... EXEC as one transaction and returns EXEC's array", function()
    local r = assert(pool:transaction { { "INCR", "t" }, { "INCR", "t" },
                                        { "LPUSH", "t", "x" } })
    assert.equal(1, r[1])
    assert.equal(2, r[2])
    -- An error inside EXEC's array is that command's; the rest ran.
    assert.is_true(resilnet.is_error(r[3]))
    assert.equal("2", pool:call { "GET", "t" })
  end)

  it("EXECABORT: a rejected command, nothing ran, maybe_executed false", function()
    local r, err = pool:transaction { { "INCR", "t" }, { "NOSUCHCOMMAND" } }
    assert.is_nil(r)
    assert.equal("EXECABORT", err.code)
    assert.matches("command 2 was rejected", err.message)
    assert.is_false(err.maybe_executed)
    assert.equal(resilnet.null, pool:call { "GET", "t" }) -- INCR did not run
  end)

  it("transaction needs resp, and has a callback form", function()
    local line = H.pool { endpoints = { "127.0.0.1:1" }, protocol = "line" }
    assert.has_error(function() line:transaction { "x" } end,
                     "pool:transaction: needs protocol 'resp', not 'line'")
    local got
    assert(pool:transaction({ { "SET", "k", "v" } }, function(r, err)
      got = r or err
    end))
    wait_for(function() return got end, 5, "cb")
    assert.same({ "OK" }, got)
  end)
end)

describe("pool:batch on every protocol", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  for _, protocol in ipairs { "line", "length", "rnp", "resp" } do
    it(protocol, function()
      local _, endpoint = H.server {
        protocol = protocol,
        handler = function(req)
          if type(req) == "table" then req = req[1] end
          if req == "fail" then error("handler failed") end
          return "re:" .. req
        end,
      }
      local p = H.pool { endpoints = { endpoint }, protocol = protocol }
      local reqs = {}
      for i = 1, 20 do reqs[i] = protocol == "resp" and { "r" .. i } or "r" .. i end
      local r = assert(p:batch(reqs))
      assert.equal(20, r.n)
      for i = 1, 20 do assert.equal("re:r" .. i, r[i]) end
      if protocol == "rnp" or protocol == "resp" then
        -- A handler's failure is that element's error reply.
        local f = assert(p:batch(protocol == "resp"
                                 and { { "a" }, { "fail" }, { "b" } }
                                 or { "a", "fail", "b" }))
        assert.equal("re:a", f[1])
        assert.equal("EREPLY", f[2].code)
        assert.equal("re:b", f[3])
      end
    end)
  end
end)

describe("rnp batches and the server's MAX_CONCURRENT", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  -- A server with max_concurrent 8 and no queue refuses every request
  -- past 8 at once. A batch of 4 is 4 requests to it: the pool counts
  -- them so (it counted a batch as one, and let 32 out).
  it("16 tasks' batches of 4 against MAX_CONCURRENT 8: none refused",
     function()
    local active, most = 0, 0
    local srv, endpoint = H.server {
      protocol = "rnp", max_concurrent = 8, queue = 0,
      handler = function(req)
        active = active + 1
        if active > most then most = active end
        resilnet.sleep(0.002)
        active = active - 1
        return "re:" .. req
      end,
    }
    local p = H.pool { endpoints = { endpoint }, protocol = "rnp", size = 4,
                       timeout = 20 }
    local TASKS, EACH = 16, 10
    local refused, failed, running = 0, 0, TASKS
    H.go(function()
      for t = 1, TASKS do
        resilnet.spawn(function()
          for i = 1, EACH do
            local reqs = {}
            for k = 1, 4 do reqs[k] = t .. "." .. i .. "." .. k end
            local r, err = p:batch(reqs)
            if not r then
              failed = failed + 1
              print(err)
            else
              for k = 1, 4 do
                if r[k] ~= "re:" .. reqs[k] then refused = refused + 1 end
              end
            end
          end
          running = running - 1
        end)
      end
      while running > 0 do resilnet.sleep(0.01) end
    end, 60)
    assert.equal(0, failed)
    assert.equal(0, refused)
    assert.equal(0, srv:stats().overloaded)
    assert.is_true(most <= 8, "the server ran " .. most .. " at once")
  end)
end)

describe("pool:transaction against a scripted server", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("EXEC answered nil (a WATCHed key changed): EWATCH, nothing ran", function()
    local _, endpoint = H.server {
      protocol = "resp",
      handler = function(req)
        if req[1] == "PING" then return "PONG" end
        if req[1] == "EXEC" then return resilnet.null end
        return req[1] == "MULTI" and "OK" or "QUEUED"
      end,
    }
    local p = H.pool { endpoints = { endpoint } }
    local r, err = p:transaction { { "INCR", "a" } }
    assert.is_nil(r)
    assert.equal("EWATCH", err.code)
    assert.matches("aborted by WATCH", err.message)
    assert.is_false(err.maybe_executed)
  end)
end)
