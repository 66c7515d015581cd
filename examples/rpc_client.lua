-- A client of examples/rpc_server.lua: calls, dedupe keys, error handling.
--
--   lua5.4 examples/rpc_server.lua --port=7400 &
--   lua5.4 examples/rpc_client.lua 127.0.0.1:7400
local resilnet = require "resilnet"

local endpoint = arg[1] or "127.0.0.1:7400"
local pool = resilnet.pool {
  endpoints = { endpoint }, protocol = "rnp",
  timeout = 2,                                  -- per call, all attempts
  heartbeat = { interval = 0.5, timeout = 1.5 },
}

local function show(what, reply, err)
  print(("%-19s -> %s"):format(what, tostring(reply or err)))
end

-- A read may run twice without harm: say so, and resilnet retries it even
-- after it was sent, if the connection breaks before the answer.
show("GET apples", pool:call("GET apples", { idempotent = true }))

-- A write without a key is never sent twice by resilnet: if the connection
-- breaks after sending, the call fails with err.maybe_executed = true.
show("ADD apples 5", pool:call("ADD apples 5"))

-- A write with a key runs at most once per key on a server with dedupe:
-- resilnet may retry it, and a duplicate gets the first answer replayed.
show("ADD apples 10 (key)", pool:call("ADD apples 10", { key = "order-42" }))
show("the same key again", pool:call("ADD apples 10", { key = "order-42" }))
show("GET apples", pool:call("GET apples", { idempotent = true }))

-- Failures are values: nil, err. err.code names the failure; a handler's
-- error comes back as EREPLY, maybe_executed = true (resilnet cannot know
-- what the handler did before it failed).
local _, bad = pool:call("ADD apples many")
show("ADD apples many", nil, bad)

-- Nothing listens here: resilnet knows the call never left, so
-- maybe_executed is false and it is safe to try again elsewhere.
local nowhere = resilnet.pool { endpoints = { "127.0.0.1:1" },
                                protocol = "rnp", timeout = 0.3 }
local _, down = nowhere:call("ADD apples 1")
show("no server", nil, down)
if not down.maybe_executed then print("safe to retry elsewhere") end

nowhere:close()
pool:close()
