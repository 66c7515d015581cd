-- A throwaway redis-server listening with TLS only (--port 0), for
-- spec/tls_spec.lua, and the test certificates it and the pools use: made
-- at test time by tools/make-test-certs.sh into a temporary directory
-- (nothing secret is committed). Nothing is saved to disk.
local socket = require "socket"
local R = require "spec.helpers.redis"
local C = require "spec.helpers.test_certs"
local P = require "spec.helpers.process"

local T = {}

-- The certificates (spec/helpers/test_certs.lua, made once per process):
-- ca.pem, server.pem/.key (localhost, 127.0.0.1, ::1), client.pem/.key,
-- wrong-ca.pem, expired.pem/.key. redis-server and redis-cli run as
-- P.external says.
local sh = C.sh
T.certs, T.cert, T.remove_certs = C.dir, C.path, C.remove

--- Whether a TLS client verified against the test CA gets PONG.
function T.ping(port, client_cert)
  local extra = client_cert and ("--cert '%s' --key '%s'"):format(
    T.cert("client.pem"), T.cert("client.key")) or ""
  local cmd = P.external("redis-cli --tls --cacert '%s' %s -h 127.0.0.1 "
    .. "-p %d PING 2>/dev/null | grep -q PONG"):format(T.cert("ca.pem"),
                                                        extra, port)
  return sh(cmd)
end

--- Starts redis-server with TLS on `port` (or a free one).
-- opts.auth_clients: require client certificates (tls-auth-clients yes).
-- Returns {port, endpoint, pid, auth_clients} or nil, why.
function T.start(port, opts)
  opts = opts or {}
  if not R.installed() then return nil, "redis-server not installed" end
  port = port or R.free_port()
  local base = os.tmpname()
  local cmd = P.external("redis-server --port 0 --tls-port %d "
    .. "--bind 127.0.0.1 "
    .. "--tls-cert-file '%s' --tls-key-file '%s' --tls-ca-cert-file '%s' "
    .. "--tls-auth-clients %s --save '' --appendonly no --daemonize no "
    .. "--dir /tmp >%s.log 2>&1 & echo $! >%s"):format(port,
      T.cert("server.pem"), T.cert("server.key"), T.cert("ca.pem"),
      opts.auth_clients and "yes" or "no", base, base)
  os.execute(cmd)
  local f = io.open(base)
  local pid = f and tonumber(f:read("*l"))
  if f then f:close() end
  os.remove(base)
  if not pid then return nil, "could not start redis-server" end
  local h = { port = port, endpoint = "127.0.0.1:" .. port, pid = pid,
              log = base .. ".log", auth_clients = opts.auth_clients }
  for _ = 1, 100 do -- up to 5 s
    if T.ping(port, opts.auth_clients) then return h end
    socket.sleep(0.05)
  end
  T.stop(h)
  return nil, "redis-server with TLS did not become ready"
end

--- Stops it (signal: "TERM" by default, "KILL" for a crash).
function T.stop(h, signal)
  os.execute(("kill -%s %d 2>/dev/null"):format(signal or "TERM", h.pid))
  for _ = 1, 250 do
    if not sh("kill -0 " .. h.pid .. " 2>/dev/null") then break end
    socket.sleep(0.02)
  end
  os.remove(h.log)
end

return T
