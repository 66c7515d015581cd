-- resilnet.server{tls = {...}} against clients resilnet did not write:
-- redis-cli --tls talks to a resilnet RESP server over TLS, with and
-- without client certificates (the handler sees the subject); a
-- plaintext client gets the tls event and counts in tls_errors;
-- server:reload_tls rotates the files. Certificates are made at test time
-- (spec/helpers/test_certs.lua). Real processes, loopback only, each case
-- bounded by H.go's timeout and p:wait's.
local resilnet = require "resilnet"
local socket = require "socket"
local H = require "spec.helpers.util"
local C = require "spec.helpers.test_certs"
local P = require "spec.helpers.process"

-- A TLS server, or nil when this build has no OpenSSL (the error then
-- names what is missing: checked here once).
local function tls_server(opts)
  local ok, srv, ep = pcall(H.server, opts)
  if ok then return srv, ep end
  assert.matches("OpenSSL", tostring(srv))
  return nil
end

local function tls_opts(extra)
  local t = { certificate = C.path("server.pem"), key = C.path("server.key") }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- Runs redis-cli with args against ep; returns its output and exit code.
local function redis_cli(ep, args)
  local host, port = ep:match("^(.*):(%d+)$")
  local argv = { "redis-cli", "--tls", "--cacert", C.path("ca.pem"),
                 "-h", host, "-p", port }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local out = {}
  P.external(argv)
  argv.stdout = function(chunk) out[#out + 1] = chunk end
  argv.stderr = argv.stdout
  local p = assert(resilnet.process(argv))
  local code = p:wait(10)
  p:close()
  return table.concat(out), code
end

local function until_true(fn, seconds)
  local deadline = resilnet.now() + (seconds or 5)
  while not fn() do
    assert(resilnet.now() < deadline, "condition not met in time")
    resilnet.sleep(0.01)
  end
end

describe("server tls", function()
  local have_cli = C.have("redis-cli") and C.have("openssl")

  before_each(function()
    if not C.have("openssl") then pending("no openssl command") end
  end)
  after_each(H.cleanup)
  teardown(C.remove)

  it("serves redis-cli --tls on a RESP server started from Lua", function()
    if not have_cli then return pending("redis-cli not installed") end
    local seen = {}
    local srv, ep = tls_server {
      protocol = "resp", tls = tls_opts(),
      handler = function(req, ctx)
        seen[#seen + 1] = ctx.peer_subject or "none"
        if req[1] == "GET" then return "value of " .. req[2] end
        return "OK"
      end,
    }
    if not srv then return pending("built without OpenSSL") end
    H.go(function()
      local out, code = redis_cli(ep, { "GET", "greeting" })
      assert.equal(0, code)
      assert.equal("value of greeting\n", out)
      out = redis_cli(ep, { "PING" }) -- the server answers PING itself
      assert.equal("PONG\n", out)
      -- without verify_client a client sends no certificate: no subject
      assert.same({ "none" }, seen)
      assert.equal(0, srv:stats().tls_errors)
    end, 30)
  end)

  it("with verify_client, refuses a client without a certificate and "
     .. "gives the handler the subject of one with", function()
    if not have_cli then return pending("redis-cli not installed") end
    local events = {}
    local srv, ep = tls_server {
      protocol = "resp",
      tls = tls_opts { cafile = C.path("ca.pem"), verify_client = true },
      handler = function(req, ctx) return ctx.peer_subject end,
    }
    if not srv then return pending("built without OpenSSL") end
    srv:on("tls", function(ev) events[#events + 1] = ev end)
    H.go(function()
      local out, code = redis_cli(ep, { "--cert", C.path("client.pem"),
                                        "--key", C.path("client.key"),
                                        "WHOAMI" })
      assert.equal(0, code)
      assert.equal("CN=resilnet-test-client,O=resilnet\n", out)
      out = redis_cli(ep, { "WHOAMI" })
      assert.not_matches("CN=", out)
      until_true(function() return srv:stats().tls_errors >= 1 end)
      assert.equal("tls", events[1].type)
      assert.truthy(events[1].error == "ETLS"
                    or events[1].error == "ETLSVERIFY")
      assert.is_string(events[1].detail)
    end, 30)
  end)

  it("counts a plaintext client as a TLS error, with the event's detail",
     function()
    local events = {}
    local ran = 0
    local srv, ep = tls_server {
      protocol = "line", tls = tls_opts(),
      handler = function() ran = ran + 1 return "x" end,
    }
    if not srv then return pending("built without OpenSSL") end
    srv:on("tls", function(ev) events[#events + 1] = ev end)
    local host, port = ep:match("^(.*):(%d+)$")
    local c = assert(socket.connect(host, tonumber(port)))
    c:send(("plaintext, not a ClientHello\n"):rep(8))
    H.go(function()
      until_true(function() return #events > 0 end)
    end, 10)
    c:close()
    assert.equal(0, ran)
    assert.equal("tls", events[1].type)
    assert.equal("ETLS", events[1].error)
    assert.is_string(events[1].detail)
    assert.equal(1, srv:stats().tls_errors)
  end)

  it("reload_tls takes new files for new connections; a bad file changes "
     .. "nothing", function()
    if not have_cli then return pending("redis-cli not installed") end
    local srv, ep = tls_server {
      protocol = "resp", tls = tls_opts(),
      handler = function() return "still here" end,
    }
    if not srv then return pending("built without OpenSSL") end
    H.go(function()
      -- a certificate the client's CA does not trust: refused by it
      assert.is_true(srv:reload_tls {
        certificate = C.path("expired.pem"), key = C.path("expired.key") })
      local out = redis_cli(ep, { "GET", "k" })
      assert.not_matches("still here", out)
      assert.is_true(srv:reload_tls(tls_opts()))
      out = redis_cli(ep, { "GET", "k" })
      assert.equal("still here\n", out)
      local ok, err = srv:reload_tls { certificate = C.path("missing.pem"),
                                       key = C.path("server.key") }
      assert.is_nil(ok)
      assert.equal("ETLS", err.code)
      out = redis_cli(ep, { "GET", "k" }) -- the last good files stay
      assert.equal("still here\n", out)
    end, 30)
  end)

  it("raises for bad tls options, a missing file, and reload_tls on a "
     .. "plaintext server", function()
    local ok, err = pcall(resilnet.server, {
      listen = "127.0.0.1:0", handler = function() end,
      tls = { certificate = 42 } })
    assert.is_false(ok)
    assert.matches("option 'tls.certificate' must be a string", err)
    ok, err = pcall(resilnet.server, {
      listen = "127.0.0.1:0", handler = function() end,
      tls = { certificate = C.path("nope.pem"), key = C.path("server.key") } })
    assert.is_false(ok)
    assert.matches("option 'tls'", err)
    ok, err = pcall(resilnet.server, {
      listen = "127.0.0.1:0", handler = function() end,
      tls = tls_opts { bogus = true } })
    assert.is_false(ok)
    assert.matches("unknown option 'tls.bogus'", err)
    local plain = H.server { protocol = "resp" }
    ok, err = pcall(plain.reload_tls, plain, tls_opts())
    assert.is_false(ok)
    -- (a build without OpenSSL says that first)
    assert.truthy(err:find("server has no TLS", 1, true)
                  or err:find("without OpenSSL", 1, true), err)
  end)

  it("rnp over mutual TLS: auth.certificate accepts the verified client "
     .. "as its subject (openssl s_client as the client)", function()
    local W = require "spec.helpers.rnp_raw_client"
    local srv, ep = tls_server {
      protocol = "rnp", idle_timeout = 1, -- closes s_client's connection
      tls = tls_opts { cafile = C.path("ca.pem"), verify_client = true },
      auth = { certificate = true },
      handler = function(req, ctx)
        return req .. "|" .. tostring(ctx.peer_subject) .. "|"
          .. tostring(ctx.identity)
      end,
    }
    if not srv then return pending("built without OpenSSL") end
    local input, output = os.tmpname(), os.tmpname()
    local f = assert(io.open(input, "wb"))
    f:write(W.frame(W.HELLO, 0, 1, { { W.F_VERSION, W.u16(1) },
                                     { W.F_MAX_FRAME, W.u32(65536) } }),
            W.frame(W.REQUEST, 0, 2, nil, "who"))
    f:close()
    H.go(function()
      local host, port = ep:match("^(.*):(%d+)$")
      local p = assert(resilnet.process {
        "sh", "-c", P.external("openssl s_client -quiet -connect %s:%s -cert '%s' "
          .. "-key '%s' -CAfile '%s' <'%s' >'%s' 2>/dev/null"):format(
          host, port, C.path("client.pem"), C.path("client.key"),
          C.path("ca.pem"), input, output) })
      assert.is_number(p:wait(10))
      p:close()
    end, 20)
    f = assert(io.open(output, "rb"))
    local data = f:read("*a")
    f:close()
    os.remove(input)
    os.remove(output)
    local frames, fr = {}, nil
    repeat
      fr, data = W.parse(data)
      frames[#frames + 1] = fr
    until not fr
    assert.equal(W.HELLO, frames[1].type)
    assert.equal(W.REPLY, frames[2].type)
    local subject = "CN=resilnet-test-client,O=resilnet"
    assert.equal("who|" .. subject .. "|" .. subject, frames[2].payload)
    assert.equal(0, srv:stats().auth_refused)
  end)

  -- A resilnet pool over mutual TLS to the rnp server needs the pool's
  -- tls option (client TLS, another branch of issue 17 at the time of
  -- writing): until it is on main this case is pending.
  it("a resilnet pool talks to an rnp server over mutual TLS and the "
     .. "handler sees its subject", function()
    local ok, probe = pcall(resilnet.pool, { endpoints = { "127.0.0.1:1" },
                                             protocol = "rnp", tls = {} })
    if ok then probe:close() end
    if not ok then
      return pending("the pool's tls option (client TLS) is not here yet")
    end
    local subject
    local srv, ep = tls_server {
      protocol = "rnp",
      tls = tls_opts { cafile = C.path("ca.pem"), verify_client = true },
      handler = function(_, ctx) subject = ctx.peer_subject return "ok" end,
    }
    if not srv then return pending("built without OpenSSL") end
    local pool = H.pool { endpoints = { ep }, protocol = "rnp",
                          tls = { cafile = C.path("ca.pem"),
                                  certificate = C.path("client.pem"),
                                  key = C.path("client.key") } }
    H.go(function()
      assert.equal("ok", assert(pool:call("hi")))
      assert.equal("CN=resilnet-test-client,O=resilnet", subject)
    end, 15)
  end)
end)
