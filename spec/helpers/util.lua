-- Shared helpers for the busted specs: echo servers, refused ports,
-- running a body as a task, and cleaning up whatever a test opened.
local resilnet = require "resilnet"

local H = {}

local opened = {}

--- Remembers an object with a :close() so H.cleanup() closes it.
function H.track(obj)
  opened[#opened + 1] = obj
  return obj
end

--- Closes everything tracked (after_each). Errors left behind by a
-- failed test (recorded task errors) are swallowed so that the next test
-- starts clean; the failure was already reported.
function H.cleanup()
  for i = #opened, 1, -1 do
    local obj = opened[i]
    opened[i] = nil
    for _ = 1, 3 do
      if pcall(obj.close, obj) then break end
    end
  end
end

--- A server for protocol with handler (default: echo), tracked.
-- Returns the server and its "host:port".
function H.server(opts)
  opts.listen = opts.listen or "127.0.0.1:0"
  opts.handler = opts.handler or function(request) return request end
  local srv = assert(resilnet.server(opts))
  H.track(srv)
  local host, port = srv:address()
  return srv, host .. ":" .. port
end

--- A pool, tracked.
function H.pool(opts)
  return H.track(resilnet.pool(opts))
end

--- An endpoint where nothing listens: a port that was just bound and
-- released (loopback, never reused this quickly by the kernel's picker).
function H.refused_endpoint()
  local srv = assert(resilnet.server { listen = "127.0.0.1:0",
                                       handler = function() end })
  local host, port = srv:address()
  srv:close()
  return host .. ":" .. port
end

--- Runs fn as a task and drives the loop until it has finished; errors in
-- it (or in any other task or callback) are raised here. Servers keep the
-- loop alive, so this waits for the task rather than for the loop.
function H.go(fn, timeout)
  local done = false
  resilnet.spawn(function()
    fn()
    done = true
  end)
  local deadline = resilnet.now() + (timeout or 30)
  while not done do
    if resilnet.now() > deadline then
      error("H.go: the task did not finish in time", 2)
    end
    -- A waiting function outside any task runs the loop one turn.
    resilnet.sleep(0)
  end
end

--- A raw TCP peer (LuaSocket, loopback, port 0) driven from a resilnet
-- task: on every chunk a connection receives, respond(chunk, n) (n counts
-- the connection's chunks) returns the bytes to write back, or false to
-- close that connection. Returns the peer ("host:port" in peer.endpoint);
-- peer:close() (tracked) stops it. Polls every 2 ms while open: LuaSocket
-- cannot join the resilnet loop, and the poll keeps each test bounded.
function H.raw_peer(respond)
  local socket = require "socket"
  local listener = assert(socket.bind("127.0.0.1", 0))
  listener:settimeout(0)
  local host, port = listener:getsockname()
  local peer = { endpoint = host .. ":" .. port, received = {} }
  local open = true
  function peer.close()
    open = false
  end
  local function serve()
    local conns = {}
    while open do
      local c = listener:accept()
      if c then
        c:settimeout(0)
        conns[#conns + 1] = { sock = c, n = 0 }
      end
      for i = #conns, 1, -1 do
        local conn = conns[i]
        local data, err, partial = conn.sock:receive(65536)
        data = data or partial
        if data and #data > 0 then
          conn.n = conn.n + 1
          peer.received[#peer.received + 1] = data
          local out = respond(data, conn.n)
          if out then
            conn.sock:send(out)
          else
            err = "closed"
          end
        end
        if err == "closed" then
          conn.sock:close()
          table.remove(conns, i)
        end
      end
      resilnet.sleep(0.002)
    end
    for _, conn in ipairs(conns) do conn.sock:close() end
    listener:close()
  end
  resilnet.spawn(serve)
  return H.track(peer)
end

return H
