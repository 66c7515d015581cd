-- Request tables as the server receives them (issue 20, item 1): arrays of
-- up to 16 strings take the binding's one-pass encoder, longer or mixed
-- ones the general walk; both must put the same RESP bytes on the wire.
local H = require "spec.helpers.util"

-- The RESP a request table must become, built here independently.
local function resp(t)
  local out = { ("*%d\r\n"):format(#t) }
  for _, v in ipairs(t) do
    local s = tostring(v)
    out[#out + 1] = "$" .. #s .. "\r\n" .. s .. "\r\n" -- not %s: 5.1 stops
                                                       -- at a zero byte
  end
  return table.concat(out)
end

local function elements(n)
  local t = {}
  for i = 1, n do t[i] = ("e%d"):format(i) end
  return t
end

describe("request encoding", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  local peer, pool
  before_each(function()
    peer = H.raw_peer(function() return "+OK\r\n" end)
    -- No heartbeat: its ping would be among the bytes received.
    pool = H.pool { endpoints = { peer.endpoint }, timeout = 5,
                    heartbeat = false, max_frame = 4096 }
  end)

  local function sends(t)
    local before = #peer.received
    assert.equal("OK", pool:call(t))
    assert.equal(before + 1, #peer.received)
    assert.equal(resp(t), peer.received[#peer.received])
  end

  it("short arrays of strings, including empty and binary ones", function()
    sends { "GET", "k" }
    sends { "SET", "k", "" }
    sends { "SET", "k", "a\r\nb\0c" }
    sends { ("x"):rep(1000) }
    sends(elements(16))
  end)

  it("longer arrays and numbers, through the general walk", function()
    sends(elements(17))
    sends(elements(40))
    sends { "INCRBY", "k", 5 }
    sends { "SET", "k", "v", "EX", 10 }
  end)

  it("an array over max_frame fails the call with EFRAMESIZE, unsent",
     function()
    for _, t in ipairs { { "SET", "k", ("x"):rep(5000) },
                         { "SET", ("k"):rep(2040), ("v"):rep(2040) } } do
      local before = #peer.received
      local reply, err = pool:call(t)
      assert.is_nil(reply)
      assert.equal("EFRAMESIZE", err.code)
      assert.equal(before, #peer.received)
    end
    sends { "GET", "k" } -- the pool carries on
  end)

  it("a bad element is still named", function()
    assert.has_error(function() pool:call { "GET", {} } end,
                     "resilnet: request[2] is a table; expected a string "
                     .. "or a number")
  end)
end)
