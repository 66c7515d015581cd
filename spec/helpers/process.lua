-- Starts and kills Lua server processes for the specs (until resilnet has
-- its own process control). The child runs spec/helpers/echo_server.lua
-- under the same interpreter and module build as the specs.
local socket = require "socket"

local P = {}

local lua = os.getenv("RESILNET_TEST_LUA") or "lua5.4"

local function succeeded(ok) return ok == true or ok == 0 end

local function start(sleep, script, ...)
  local out = os.tmpname()
  local args = { ... }
  for i = 1, #args do args[i] = ("%q"):format(tostring(args[i])) end
  local cmd = ("%s %s %s >%s 2>&1 & echo $!")
    :format(lua, script, table.concat(args, " "), out)
  local pipe = assert(io.popen(cmd))
  local pid = tonumber(pipe:read("*l"))
  pipe:close()
  assert(pid, "could not start the server process")
  for _ = 1, 500 do -- up to 10 s: the child prints its port once it listens
    local f = io.open(out)
    local text = f and f:read("*a") or ""
    if f then f:close() end
    local got = text:match("listening (%d+)")
    if got then
      os.remove(out)
      return { pid = pid, port = tonumber(got) }
    end
    sleep(0.02)
  end
  os.execute("kill -9 " .. pid .. " 2>/dev/null")
  error("server process did not start: " .. (io.open(out) and io.open(out):read("*a") or "?"))
end

--- Starts `lua script args...` (a server that prints "listening <port>").
-- Returns {pid, port} once it listens, or raises.
function P.start_script(script, ...)
  return start(socket.sleep, script, ...)
end

--- The same from a resilnet task: waits with resilnet.sleep, so the
-- task's loop (and every call in flight) keeps running meanwhile.
function P.start_script_in_task(script, ...)
  return start(require("resilnet").sleep, script, ...)
end

--- Starts an echo server process listening on 127.0.0.1:port (0: any).
function P.start_server(protocol, port)
  return P.start_script("spec/helpers/echo_server.lua", protocol, port)
end

--- Starts a ledger server (spec/helpers/ledger_server.lua) writing to path.
function P.start_ledger(port, path)
  return P.start_script("spec/helpers/ledger_server.lua", port, path)
end

--- Executions recorded in a ledger file: id -> count.
function P.read_ledger(path)
  local counts = {}
  local f = io.open(path)
  if not f then return counts end
  for id in f:lines() do counts[id] = (counts[id] or 0) + 1 end
  f:close()
  return counts
end

--- Sends signal (e.g. "KILL") and, for fatal ones, waits until it is gone.
function P.kill(proc, signal)
  assert(succeeded(os.execute(("kill -%s %d 2>/dev/null"):format(signal, proc.pid))))
  if signal == "STOP" or signal == "CONT" then return end
  for _ = 1, 500 do
    if not succeeded(os.execute(("kill -0 %d 2>/dev/null"):format(proc.pid))) then
      return
    end
    socket.sleep(0.02)
  end
  error("process " .. proc.pid .. " did not exit")
end

return P
