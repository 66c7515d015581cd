-- The throwaway certificates of the TLS specs: made at test time by
-- tools/make-test-certs.sh (nothing secret is committed) into a temporary
-- directory, once per process, removed by remove(). ca.pem,
-- server.pem/.key (localhost, 127.0.0.1, ::1), client.pem/.key (subject
-- CN=resilnet-test-client,O=resilnet), wrong-ca.pem, expired.pem/.key.
local P = require "spec.helpers.process"

local C = {}

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end
C.sh = sh

local source_dir = require("spec.helpers.util").source_dir

local dir
--- The directory, made on first use.
function C.dir()
  if dir then return dir end
  local d = os.tmpname()
  os.remove(d)
  assert(sh(P.external("sh '%s' '%s'"):format(
           source_dir() .. "tools/make-test-certs.sh", d)),
         "tools/make-test-certs.sh failed")
  dir = d
  return d
end

function C.path(name) return C.dir() .. "/" .. name end

function C.remove()
  if dir then sh("rm -rf '" .. dir .. "'") end
  dir = nil
end

--- Whether a program is on PATH.
function C.have(program)
  return sh("command -v " .. program .. " >/dev/null 2>&1")
end

return C
