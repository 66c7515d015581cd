-- Servers under test for the chaos suite and the soak, each a child
-- process driven through resilnet.process (so SIGKILL, SIGSTOP/SIGCONT and
-- restarts are real), each on a fixed port picked up front so that a
-- restarted server comes back where the proxy in front of it points:
--
--   rnp   spec/helpers/server.lua, handler=ledger: every execution
--         appended to a ledger file (flushed before the reply, so it
--         survives SIGKILL);
--         dedupe of keyed requests; "DRAIN" makes it GOAWAY and exit.
--   redis redis-server with appendonly yes + appendfsync always (a reply
--         is on disk before it is sent, so replies survive SIGKILL); each
--         non-idempotent call INCRs a key of its own, so the keys are the
--         ledger.
--
-- Every server has: endpoint, kill(sig), restart() (SIGKILL, start again,
-- wait until it serves), executions() -> counts (id -> times run) and
-- mangled (a list of {text, n}: entries that name no well-formed id, run n
-- times), close(), and client_tls: the pools' tls option (nil for
-- plaintext).
--
-- With opts.tls both serve TLS only, with the test certificates of
-- spec/helpers/test_certs.lua (made at test time; the server's names
-- include 127.0.0.1, so pools verify the name too): the rnp server through
-- resilnet.server{tls = ...}, redis-server on --tls-port with --port 0.
local resilnet = require "resilnet"
local R = require "spec.helpers.redis"
local P = require "spec.helpers.process"
local C = require "spec.helpers.test_certs"
local T = require "spec.helpers.tls_redis"

local S = {}

local function succeeded(ok) return ok == true or ok == 0 end

---------------------------------------------------------------------------
-- Well-formed ids: "<prefix><n>.<check>", check a hash of the rest. A byte
-- the proxy corrupted in an id is then told apart from a real call's id
-- (a corrupted id that still checks and names another call: about one in
-- a million per corrupted id).

local function check_of(s)
  local h = 7
  for i = 1, #s do h = (h * 31 + s:byte(i)) % 999983 end
  return ("%06d"):format(h)
end

function S.make_id(prefix, n)
  local base = prefix .. n
  return base .. "." .. check_of(base)
end

function S.well_formed(id)
  local base, check = id:match("^([%w:%-]+)%.(%d%d%d%d%d%d)$")
  return base ~= nil and check_of(base) == check
end

---------------------------------------------------------------------------
-- rnp server with a ledger.

local function client_tls(opts)
  return opts.tls and { cafile = C.path("ca.pem") } or nil
end

--- S.rnp{lua = interpreter, dedupe = "on"|"off", tls = bool} -> server
-- (started).
function S.rnp(opts)
  opts = opts or {}
  local port = R.free_port()
  local srv = { kind = "rnp", port = port, endpoint = "127.0.0.1:" .. port,
                ledger = os.tmpname(), client_tls = client_tls(opts) }
  local args = { protocol = "rnp", handler = "ledger", ledger = srv.ledger,
                 dedupe = opts.dedupe or "on", port = port, lua = opts.lua }
  if opts.tls then
    args.tls_certificate = C.path("server.pem")
    args.tls_key = C.path("server.key")
  end
  local server = P.server(args)
  srv.proc = server.proc

  function srv.kill(sig) return srv.proc:kill(sig) end

  function srv.restart() server:restart() end

  --- A planned restart: the running server sends GOAWAY and drains; a
  -- new one binds the same port as soon as the old one lets go of it.
  function srv.drain_restart()
    local admin = resilnet.pool { endpoints = { srv.endpoint },
                                  protocol = "rnp", size = 1, timeout = 2,
                                  heartbeat = false, tls = srv.client_tls }
    local reply, err = admin:call("DRAIN")
    admin:close()
    assert(reply == "draining", "DRAIN: " .. tostring(reply or err))
    local old = server
    server = P.server(args)
    srv.proc = server.proc
    old.proc:wait(10)
    old:close()
  end

  function srv.executions()
    local counts, mangled = {}, {}
    for id, n in pairs(P.read_ledger(srv.ledger)) do
      if S.well_formed(id) then
        counts[id] = n
      else
        mangled[#mangled + 1] = { text = id, n = n }
      end
    end
    return counts, mangled
  end

  function srv.close()
    server:close()
    os.remove(srv.ledger)
  end
  return srv
end

---------------------------------------------------------------------------
-- redis-server.

S.have_redis = R.installed

-- redis-server on port, with TLS only when tls; ready once it answers
-- PING (through redis-cli --tls, verified against the test CA).
local function launch_redis(port, args, log, tls)
  if not tls then return R.launch(port, args, log) end
  local argv = { "redis-server", "--port", "0", "--tls-port", port,
                 "--bind", "127.0.0.1", "--save", "", "--daemonize", "no",
                 "--tls-cert-file", C.path("server.pem"),
                 "--tls-key-file", C.path("server.key"),
                 "--tls-ca-cert-file", C.path("ca.pem"),
                 "--tls-auth-clients", "no", stdout = log,
                 env = { LD_PRELOAD = false } }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return P.start(argv, { port = port,
                         ready = function() return T.ping(port) end })
end

--- S.redis{gets = n, tls = bool} -> server (started, keys g:1..g:n set to
-- v1..vn), or nil, why.
function S.redis(opts)
  opts = opts or {}
  if not S.have_redis() then return nil, "redis-server not installed" end
  local port = R.free_port()
  local dir = os.tmpname()
  os.remove(dir)
  assert(succeeded(os.execute("mkdir " .. dir)))
  local srv = { kind = "redis", port = port, endpoint = "127.0.0.1:" .. port,
                dir = dir, client_tls = client_tls(opts) }
  local server = launch_redis(port, { "--appendonly", "yes", "--appendfsync",
                                      "always", "--dir", dir },
                              dir .. "/log.txt", opts.tls)
  srv.proc = server.proc

  -- A direct connection (no proxy) for setting up and reading back.
  local function direct(fn)
    local pool = resilnet.pool { endpoints = { srv.endpoint }, timeout = 5,
                                 heartbeat = false, size = 1,
                                 tls = srv.client_tls }
    local ok, a, b = pcall(fn, pool)
    pool:close()
    if not ok then error(a, 0) end
    return a, b
  end

  local gets = opts.gets or 20
  direct(function(pool)
    local mset = { "MSET" }
    for j = 1, gets do
      mset[#mset + 1] = "g:" .. j
      mset[#mset + 1] = "v" .. j
    end
    assert(pool:call(mset))
  end)

  function srv.kill(sig) return srv.proc:kill(sig) end

  function srv.restart() server:restart() end

  --- Every n:* key is one non-idempotent call: its value is how many
  -- times it ran. Keys that are neither a well-formed n: id nor a g: key
  -- were made by corrupted commands.
  function srv.executions()
    return direct(function(pool)
      local keys = assert(pool:call { "KEYS", "*" })
      local counts, mangled, wanted = {}, {}, {}
      for _, key in ipairs(keys) do
        if not key:match("^g:%d+$") then wanted[#wanted + 1] = key end
      end
      for i = 1, #wanted, 500 do
        local batch = { "MGET" }
        for j = i, math.min(i + 499, #wanted) do
          batch[#batch + 1] = wanted[j]
        end
        local got = assert(pool:call(batch))
        for j = 1, #batch - 1 do
          local key, v = batch[j + 1], tonumber(got[j]) or 1
          local id = key:match("^n:(.*)$")
          if id and S.well_formed(id) then
            counts[id] = v
          else -- corrupted (chaos_engine attributes it to a call)
            mangled[#mangled + 1] = { text = id or key:sub(3), n = v }
          end
        end
      end
      return counts, mangled
    end)
  end

  function srv.close()
    server:close()
    os.execute("rm -rf " .. dir)
  end
  return srv
end

S.free_port = R.free_port
return S
