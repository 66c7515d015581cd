-- Per-request rules of resilnet.proxy (issue 6), seen by a resilnet pool
-- through the proxy: an rnp server (and a length one) counts what it ran,
-- so each test shows both what the caller got and what the server did.
-- The C test (core/test/test-proxy-rules.c) checks each rule byte for byte
-- with a plain client.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

-- A server of protocol behind a proxy that knows it; ran[request] counts
-- the handler's executions.
local function setup(protocol, proxy_opts)
  local ran = {}
  local _, upstream = H.server {
    protocol = protocol,
    handler = function(request)
      ran[request] = (ran[request] or 0) + 1
      return "ok:" .. request
    end,
  }
  local opts = proxy_opts or {}
  opts.upstream = upstream
  opts.protocol = protocol
  local px = H.track(assert(resilnet.proxy(opts)))
  return px, ran
end

local function pool(px, protocol, opts)
  opts = opts or {}
  opts.endpoints = { px:endpoint() }
  opts.protocol = protocol
  opts.heartbeat = false
  opts.timeout = opts.timeout or 2
  opts.reconnect = { initial = 0.01 }
  return H.pool(opts)
end

local function count(px, type_, id)
  local n = 0
  for _, e in ipairs(px:events()) do
    if e.type == type_ and (id == nil or e.fault == id) then n = n + 1 end
  end
  return n
end

-- Events arrive on a later turn of the loop: let it run until n of them
-- are in (bounded).
local function await_events(px, type_, id, n)
  for _ = 1, 1000 do
    if count(px, type_, id) >= n then break end
    resilnet.sleep(0.002)
  end
  return count(px, type_, id)
end

describe("resilnet.proxy rules", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)

  it("checks its options", function()
    assert.has_error(function()
      resilnet.proxy { upstream = "127.0.0.1:1", protocol = "http" }
    end)
    assert.has_error(function()
      resilnet.proxy { upstream = "127.0.0.1:1", length_bytes = 2 }
    end, "resilnet.proxy: option 'length_bytes' applies only to protocol "
         .. "'length'")
    local bytes = H.track(assert(resilnet.proxy { upstream = "127.0.0.1:1" }))
    assert.has_error(function()
      bytes:rule { kind = "fail_request", nth = 1 }
    end, "proxy:rule: the proxy has no protocol to find requests with "
         .. "(resilnet.proxy{protocol = ...})")
    local px = H.track(assert(resilnet.proxy {
      upstream = "127.0.0.1:1", protocol = "length", length_bytes = 2 }))
    assert.has_error(function() px:rule { kind = "nope" } end,
                     "proxy:rule: unknown kind 'nope'")
    assert.has_error(function() px:rule { kind = "fail_request" } end,
                     "proxy:rule: fail_request needs nth")
    assert.has_error(function() px:rule { kind = "fail_request", nth = 0 } end,
                     "proxy:rule: option 'nth' must be an integer >= 1")
    assert.has_error(function()
      px:rule { kind = "fail_first", n = 1, action = "explode" }
    end, 'proxy:rule: option \'action\' must be "rst", "close" or "drop"')
    assert.has_error(function()
      px:rule { kind = "drop_reply", every = 2, action = "rst" }
    end, "proxy:rule: option 'action' does not apply to kind 'drop_reply'")
    assert.has_error(function()
      px:rule { kind = "fail_first", n = 1, direction = "up" }
    end, "proxy:rule: option 'direction' does not apply to kind 'fail_first'")
    local r = px:rule { kind = "drop_reply", every = 3 }
    assert.equal("drop_reply", r.kind)
    assert.is_true(px:remove(r))
    assert.is_false(px:remove(r))
  end)

  it("a plain call whose request was reset before the server fails as "
     .. "maybe executed; the server never ran it", function()
    local px, ran = setup("rnp")
    local p = pool(px, "rnp")
    local r = px:rule { kind = "fail_request", nth = 1, action = "rst" }
    local reply, err = p:call("pay-1")
    assert.is_nil(reply)
    -- Sent, then the connection failed: resilnet cannot know the server
    -- did not run it (design.md, the retry table), so it must not retry.
    assert.is_true(err.maybe_executed)
    assert.equal(1, err.attempts)
    assert.is_nil(ran["pay-1"])
    assert.equal("ok:pay-2", p:call("pay-2"))
    assert.equal(1, ran["pay-2"])
    assert.equal(1, await_events(px, "request_reset", r.id, 1))
    assert.equal(1, await_events(px, "reset", r.id, 1))
  end)

  it("an idempotent call is retried past failed requests and succeeds",
     function()
    local px, ran = setup("rnp")
    local p = pool(px, "rnp", { retry = { attempts = 3, initial = 0.001 } })
    local r = px:rule { kind = "fail_first", n = 2, action = "close" }
    assert.equal("ok:get-1", p:call("get-1", { idempotent = true }))
    assert.equal(1, ran["get-1"])
    assert.equal(2, await_events(px, "request_close", r.id, 2))
    -- Past the first two, every request passes.
    assert.equal("ok:get-2", p:call("get-2"))
    assert.equal(2, count(px, "request_close", r.id))
  end)

  it("drop: a swallowed request times out, maybe executed, never ran",
     function()
    local px, ran = setup("rnp")
    local p = pool(px, "rnp")
    local r = px:rule { kind = "fail_request", nth = 2, action = "drop" }
    assert.equal("ok:a", p:call("a"))
    local reply, err = p:call("b", { timeout = 0.3 })
    assert.is_nil(reply)
    assert.equal("ETIMEDOUT", err.code)
    assert.is_true(err.maybe_executed)
    assert.is_nil(ran["b"])
    -- The connection was left alone: the next call uses it.
    assert.equal("ok:c", p:call("c"))
    assert.equal(1, await_events(px, "request_drop", r.id, 1))
    assert.equal(0, count(px, "reset") + count(px, "close"))
  end)

  it("drop_reply: every second reply is lost after the server ran the call",
     function()
    local px, ran = setup("rnp")
    local p = pool(px, "rnp", { timeout = 0.3 })
    local r = px:rule { kind = "drop_reply", every = 2 }
    local got = {}
    for i = 1, 6 do
      local reply, err = p:call("n" .. i)
      got[i] = reply or err.code
      if not reply then assert.is_true(err.maybe_executed) end
    end
    assert.same({ "ok:n1", "ETIMEDOUT", "ok:n3", "ETIMEDOUT", "ok:n5",
                  "ETIMEDOUT" }, got)
    for i = 1, 6 do assert.equal(1, ran["n" .. i]) end
    assert.equal(3, await_events(px, "reply_drop", r.id, 3))
    -- Lifted while the pool stays connected: every reply comes.
    assert.is_true(px:remove(r))
    assert.equal("ok:n7", p:call("n7"))
    assert.equal("ok:n8", p:call("n8"))
  end)

  it("length: the n-th request fails; an idempotent call retries past it",
     function()
    local px, ran = setup("length")
    local p = pool(px, "length", { retry = { attempts = 2, initial = 0.001 } })
    local r = px:rule { kind = "fail_request", nth = 2, action = "rst" }
    assert.equal("ok:one", p:call("one"))
    assert.equal("ok:two", p:call("two", { idempotent = true }))
    assert.equal(1, ran["two"])
    assert.equal(1, await_events(px, "request_reset", r.id, 1))
    -- A rule added now counts from here: the next request fails.
    px:rule { kind = "fail_request", nth = 1, action = "rst" }
    local reply, err = p:call("three")
    assert.is_nil(reply)
    assert.is_true(err.maybe_executed)
    assert.is_nil(ran["three"])
    px:clear()
    assert.equal("ok:four", p:call("four"))
  end)

  it("bytes that do not parse are logged and passed on as bytes", function()
    local _, upstream = H.server { protocol = "line" }
    -- The proxy expects length frames; a line client sends text.
    local px = H.track(assert(resilnet.proxy {
      upstream = upstream, protocol = "length", max_frame = 1024 }))
    px:rule { kind = "fail_first", n = 100 }
    local p = H.pool { endpoints = { px:endpoint() }, protocol = "line",
                       heartbeat = false, timeout = 2 }
    assert.equal("hello", p:call("hello"))
    assert.equal("again", p:call("again"))
    -- Up as the client's text came, down as the echo did.
    assert.equal(2, await_events(px, "frame_error", nil, 2))
    assert.equal(0, count(px, "request_reset"))
    local e
    for _, ev in ipairs(px:events()) do
      if ev.type == "frame_error" then e = e or ev end
    end
    assert.equal("up", e.direction)
    assert.equal("EFRAMESIZE", e.error)
  end)
end)
