-- What bad input gets (design §7): a clear error for the calls on the
-- affected connection, that connection closed, everything else unharmed.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

-- A healthy server and pool that must keep working next to the bad ones.
local function bystander()
  local _, ep = H.server { protocol = "line" }
  return H.pool { endpoints = { ep }, protocol = "line" }
end

local function assert_carries_on(pool)
  assert.equal("still here", pool:call("still here"))
end

describe("bad input", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  describe("from a server", function()
    it("an oversized reply fails the call with EFRAMESIZE", function()
      local other = bystander()
      local _, ep = H.server {
        protocol = "line",
        handler = function(req)
          return req == "big" and string.rep("x", 1000) or req
        end,
      }
      local pool = H.pool { endpoints = { ep }, protocol = "line",
                            max_frame = 100 }
      local reply, err = pool:call("big")
      assert.is_nil(reply)
      assert.equal("EFRAMESIZE", err.code)
      assert.is_true(err.maybe_executed)
      -- the same pool carries on, on a new connection
      assert.equal("small", pool:call("small"))
      assert_carries_on(other)
    end)

    it("an oversized length prefix fails at once, before the body arrives",
       function()
      local peer = H.raw_peer(function()
        return "\0\1\0\0" -- announces 65536 bytes and never sends them
      end)
      local pool = H.pool { endpoints = { peer.endpoint },
                            protocol = "length", max_frame = 1024,
                            timeout = 5 }
      local t0 = resilnet.now()
      local reply, err = pool:call("x")
      assert.is_nil(reply)
      assert.equal("EFRAMESIZE", err.code)
      assert.is_true(resilnet.now() - t0 < 2)
    end)

    it("malformed RESP fails the call with EBADFRAME", function()
      local other = bystander()
      local peer = H.raw_peer(function() return "$abc\r\n" end)
      -- No heartbeat: its handshake ping would meet the garbage first.
      local pool = H.pool { endpoints = { peer.endpoint }, timeout = 5,
                            heartbeat = false }
      local reply, err = pool:call { "GET", "k" }
      assert.is_nil(reply)
      assert.equal("EBADFRAME", err.code)
      assert.is_true(err.maybe_executed)
      assert_carries_on(other)
    end)

    it("garbage bytes fail the call with EBADFRAME", function()
      local peer = H.raw_peer(function() return "\0\1\2garbage\255\r\n" end)
      local pool = H.pool { endpoints = { peer.endpoint }, timeout = 5,
                            heartbeat = false }
      local _, err = pool:call { "PING" }
      assert.equal("EBADFRAME", err.code)
    end)

    it("garbage in answer to the handshake ping: the call is never sent",
       function()
      local peer = H.raw_peer(function() return "$abc\r\n" end)
      local pool = H.pool { endpoints = { peer.endpoint }, timeout = 0.5 }
      local reply, err = pool:call { "GET", "k" }
      assert.is_nil(reply)
      assert.equal("EBADFRAME", err.code)
      assert.is_false(err.maybe_executed)
    end)

    it("a reply with no request waiting closes the connection with "
       .. "EUNEXPECTED", function()
      local other = bystander()
      local requests = 0
      local peer = H.raw_peer(function()
        -- the first request gets its reply and a stray one behind it
        requests = requests + 1
        return requests == 1 and "one\nstray\n" or "fine\n"
      end)
      local pool = H.pool { endpoints = { peer.endpoint }, protocol = "line",
                            timeout = 5 }
      local closed_with = {}
      pool:on("state", function(ev)
        if ev.state == "closed" then closed_with[#closed_with + 1] = ev.error end
      end)
      assert.equal("one", pool:call("a"))
      H.go(function()
        for _ = 1, 2000 do
          if #closed_with > 0 then break end
          resilnet.sleep(0.001)
        end
      end)
      assert.same({ "EUNEXPECTED" }, closed_with)
      -- nothing stray was matched to the next call
      assert.equal("fine", pool:call("b"))
      assert_carries_on(other)
    end)

    it("a server that closes mid-reply fails the call, maybe executed",
       function()
      local peer = H.raw_peer(function() return false end)
      local pool = H.pool { endpoints = { peer.endpoint }, protocol = "line",
                            timeout = 5 }
      local reply, err = pool:call("x")
      assert.is_nil(reply)
      assert.is_true(err.code == "EOF" or err.code == "ECONNRESET", err.code)
      assert.is_true(err.maybe_executed)
    end)
  end)

  describe("to a server", function()
    it("malformed RESP closes that client's connection only", function()
      local executed = 0
      local _, ep = H.server {
        handler = function(req) executed = executed + 1; return req end,
      }
      -- a line client speaks nonsense to the resp server: Redis's protocol
      -- error comes back (a line here), then the connection closes
      local bad = H.pool { endpoints = { ep }, protocol = "line",
                           timeout = 5 }
      local reply = bad:call("*abc")
      assert.equal("-ERR Protocol error: invalid multibulk request\r", reply)
      local good = H.pool { endpoints = { ep } }
      assert.same({ "PING" }, good:call { "PING" } and { "PING" })
      assert.same({ "ECHO", "x" }, good:call { "ECHO", "x" })
      assert.equal(1, executed)
    end)

    it("an oversized request closes that client's connection only",
       function()
      local _, ep = H.server { protocol = "line", max_frame = 64 }
      local bad = H.pool { endpoints = { ep }, protocol = "line",
                           timeout = 5 }
      local _, err = bad:call(string.rep("x", 1000))
      assert.is_true(err.code == "EOF" or err.code == "ECONNRESET", err.code)
      local good = H.pool { endpoints = { ep }, protocol = "line" }
      assert.equal("ok", good:call("ok"))
    end)

    it("a handler that raises: resp answers an error reply, line drops the "
       .. "connection", function()
      local _, rep = H.server {
        handler = function(req)
          if req[1] == "BOOM" then error("kaboom\r\nwith lines", 0) end
          return req[1]
        end,
      }
      local pool = H.pool { endpoints = { rep } }
      local _, err = pool:call { "BOOM" }
      assert.equal("EREPLY", err.code)
      assert.equal("ERR kaboom  with lines", err.message)
      assert.equal("AFTER", pool:call { "AFTER" })

      local _, lep = H.server {
        protocol = "line",
        handler = function(req)
          if req == "boom" then error("kaboom") end
          return req
        end,
      }
      local line = H.pool { endpoints = { lep }, protocol = "line" }
      local reply, err2 = line:call("boom")
      assert.is_nil(reply)
      assert.is_true(err2.code == "EOF" or err2.code == "ECONNRESET",
                     err2.code)
      assert.equal("after", line:call("after"))
    end)

    it("a handler's unencodable reply becomes an error, not a crash",
       function()
      local _, ep = H.server { handler = function() return print end }
      local pool = H.pool { endpoints = { ep } }
      local _, err = pool:call { "X" }
      assert.equal("EREPLY", err.code)
      assert.matches("cannot encode a function", err.message)

      local _, lep = H.server {
        protocol = "line",
        handler = function() return "two\nlines" end,
      }
      local line = H.pool { endpoints = { lep }, protocol = "line" }
      local _, err2 = line:call("x")
      assert.is_true(err2.code == "EOF" or err2.code == "ECONNRESET",
                     err2.code)
    end)
  end)
end)
