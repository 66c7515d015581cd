-- The resilnet side the poll host scripts (spec/hosts/*_poll.lua) share:
-- a pool on the redis-server their spec started, and a task's work of
-- counting a key up with INCR, every reply checked. Required after the
-- host's own modules and resilnet (spec/helpers/host_script.lua says why
-- the order matters).
local resilnet = require "resilnet"

local C = {}

--- C.pool(port) -> a pool of 2 connections on redis-server at
-- 127.0.0.1:port, resp, 5 s a call.
function C.pool(port)
  return resilnet.pool{ endpoints = { "127.0.0.1:" .. port },
                        protocol = "resp", size = 2, timeout = 5 }
end

--- C.count_up(pool, key, n, counted): from a task, DEL key, then INCR it
-- n times, each reply checked to be its count; counted() after each.
function C.count_up(pool, key, n, counted)
  assert(pool:call({ "DEL", key }))
  for i = 1, n do
    local v = assert(pool:call({ "INCR", key }))
    assert(v == i, "INCR returned " .. tostring(v))
    counted()
  end
end

return C
