-- The examples run as documented: examples/rpc_server.lua in a process of
-- its own, examples/rpc_client.lua against it; and the file dedupe store
-- (examples/dedupe_file.lua) keeps a key's answer across a SIGKILL.
local resilnet = require "resilnet"
local P = require "spec.helpers.process"

local LUA = P.LUA

local procs = {}

-- Starts rpc_server.lua with args; returns the process and its port.
local function start_server(...)
  local srv = P.start { LUA, "examples/rpc_server.lua", ... }
  procs[#procs + 1] = srv.proc
  return srv.proc, srv.port
end

local function read_file(path)
  local f = io.open(path)
  local text = f and f:read("*a") or ""
  if f then f:close() end
  return text
end

describe("examples", function()
  local tmp = {}
  local function tmpname()
    tmp[#tmp + 1] = os.tmpname()
    return tmp[#tmp]
  end

  after_each(function()
    for i = #procs, 1, -1 do
      pcall(procs[i].close, procs[i])
      procs[i] = nil
    end
    for _, f in ipairs(tmp) do os.remove(f) end
    tmp = {}
  end)

  it("rpc_client.lua talks to rpc_server.lua", function()
    local _, port = start_server()
    local pipe = assert(io.popen(("timeout 30 %s examples/rpc_client.lua "
                                  .. "127.0.0.1:%d 2>&1; echo \"exit $?\"")
                                 :format(LUA, port)))
    local out = pipe:read("*a")
    pipe:close()
    local function has(text)
      assert(out:find(text, 1, true), "missing '" .. text .. "' in:\n" .. out)
    end
    has("GET apples          -> 0\n")
    has("ADD apples 5        -> 5\n")
    has("ADD apples 10 (key) -> 15\n")
    has("the same key again  -> 15\n") -- replayed: not 25
    has("GET apples          -> 15\n")
    has("ADD apples many     -> EREPLY: bad request")
    has("may have executed")
    has("no server           -> ECONNREFUSED")
    has("not executed")
    has("safe to retry elsewhere\n")
    has("exit 0\n")
  end)

  it("a key outlives a SIGKILL in the file store; a key claimed by a "
     .. "killed process stays busy", function()
    local store, journal = tmpname(), tmpname()
    local args = { "--dedupe=" .. store, "--journal=" .. journal }
    local p, port = start_server(args[1], args[2])
    local endpoint = "127.0.0.1:" .. port
    local pool = resilnet.pool { endpoints = { endpoint }, protocol = "rnp",
                                 timeout = 2,
                                 reconnect = { initial = 0.02, max = 0.1 } }
    assert.equal("1", pool:call("ADD n 1 #a", { key = "k1" }))

    p:kill("KILL")
    assert.equal(137, (p:wait(5)))
    start_server("--port=" .. port, args[1], args[2])
    -- Replayed from the file: not run again (the journal says once).
    assert.equal("1", pool:call("ADD n 1 #a", { key = "k1" }))
    assert.equal("a ADD n 1\n", read_file(journal))
    -- The counter itself came back from the journal.
    assert.equal("1", pool:call("GET n", { idempotent = true }))

    -- A process killed between claiming k2 and finishing it leaves this:
    local f = assert(io.open(store, "a"))
    f:write(("C %d 6b32\n"):format(os.time() + 60))
    f:close()
    local reply, err = pool:call("ADD n 1 #b", { key = "k2", timeout = 1 })
    assert.is_nil(reply)
    assert.equal("EREPLY", err.code)
    assert.is_true(err.maybe_executed)
    assert.matches("in progress", err.message)
    assert.equal("a ADD n 1\n", read_file(journal)) -- b never ran
    pool:close()
  end)
end)
