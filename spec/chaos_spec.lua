-- The chaos suite (issue 6): every fault of the catalogue in
-- spec/helpers/chaos_faults.lua against two servers, each a real child
-- process behind resilnet.proxy:
--   rnp    spec/helpers/server.lua, handler=ledger (a ledger of
--          executions, dedupe of keyed calls, GOAWAY on "DRAIN");
--   redis  redis-server, appendonly yes + appendfsync always; INCR of a key
--          per call (non-idempotent, countable), GET (idempotent).
-- Each case runs idempotent, keyed (rnp) and plain calls, one at a time
-- and pipelined, while the fault is on, lifts it, requires every kind of
-- call to succeed again, and judges the history with resilnet.check
-- against the server's record (see chaos_engine.lua for the rules). The
-- file descriptors of this process are back to their count after each.
--
-- Seeds: each case prints its seed; the seed draws the fault's parameters,
-- the proxy's random choices and the workload's. To rerun one case:
--   RESILNET_CHAOS_SEED=<seed> RESILNET_CHAOS_CASE=rnp/corrupt-up \
--     busted --lua=lua5.4 spec/chaos_spec.lua
-- (RESILNET_CHAOS_CASE matches a substring of "server/fault"). Kernel
-- timing is not replayed: a seed makes the same choices, not the same
-- interleaving.
--
-- Over TLS ("rnp+tls/...", "redis+tls/..."): the same servers serving TLS
-- only (test certificates made at test time, verified by the pools), the
-- proxy in between attacking TLS records at the TCP level, with the
-- faults that meet TLS itself: corrupt (ETLS on that connection only, and
-- judged strictly: TLS lets no altered byte reach a codec), a reset
-- inside every handshake (calls stay unsent), slicing (records cut into
-- pieces) and blackhole (the heartbeat finds it). Every interpreter runs
-- one direction of each per server (8 cases, about 7 s); the full matrix
-- both. Under ASan the cases over TLS found a use-after-free in the
-- client (test-tls-pool's test_write_done_as_tls_fails).
--
-- Cost: about 85 cases (14 over TLS) of about 0.8 s. The whole matrix
-- runs under one interpreter only, plain Lua 5.4 (the faults, the proxy
-- and the retry decisions are in C, the same for every Lua); LuaJIT,
-- 5.1-5.3 and sanitizer runs (LD_PRELOAD of libasan) take a small subset
-- that still crosses every call kind with both servers, plus the 8 TLS
-- cases. RESILNET_CHAOS=full or RESILNET_CHAOS=quick overrides the choice.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local F = require "spec.helpers.chaos_faults"
local S = require "spec.helpers.chaos_servers"
local C = require "spec.helpers.test_certs"

local choice = os.getenv("RESILNET_CHAOS")
local sanitized = (os.getenv("LD_PRELOAD") or ""):find("asan") ~= nil
local FULL = choice == "full" or choice ~= "quick" and _VERSION == "Lua 5.4"
             and not rawget(_G, "jit") and not sanitized
local QUICK = {
  ["rnp/latency-down"] = true, ["rnp/close-rst-up"] = true,
  ["rnp/corrupt-up"] = true, ["rnp/stop-accept"] = true,
  ["rnp/sigkill-restart"] = true, ["rnp/goaway-restart"] = true,
  ["redis/reset-down"] = true, ["redis/duplicate-down"] = true,
  ["redis/sigstop-sigcont"] = true,
  ["rnp+tls/corrupt-down"] = true, ["rnp+tls/reset-handshake"] = true,
  ["rnp+tls/slice-up"] = true, ["rnp+tls/blackhole-down"] = true,
  ["redis+tls/corrupt-up"] = true, ["redis+tls/reset-handshake"] = true,
  ["redis+tls/slice-down"] = true, ["redis+tls/blackhole-up"] = true,
}
-- The faults run over TLS as well (spec/helpers/chaos_faults.lua).
local TLS_FAULTS = { "corrupt-up", "corrupt-down", "reset-handshake",
                     "slice-up", "slice-down", "blackhole-up",
                     "blackhole-down" }
local SEED = tonumber(os.getenv("RESILNET_CHAOS_SEED") or "")
local ONLY = os.getenv("RESILNET_CHAOS_CASE")
local BASE = (os.time() % 1000000) * 1000
local LUA = os.getenv("RESILNET_TEST_LUA") or "lua5.4"

local function selected(name)
  if ONLY then return name:find(ONLY, 1, true) ~= nil end
  return FULL or QUICK[name] == true
end

local function report(name, seed, v)
  print(("\n[chaos %s] seed %d: %s in %.2f s: %s"):format(
    name, seed, v.ok and "ok" or "FAILED", v.seconds, v.summary))
end

describe("chaos", function()
  before_each(H.fd_watch)
  after_each(H.cleanup_checking_fds)
  teardown(C.remove)

  local cases = {}
  for _, server in ipairs { "rnp", "redis" } do
    for _, fault in ipairs(F.for_server(server)) do
      cases[#cases + 1] = { server, fault, server }
    end
  end
  for _, server in ipairs { "rnp", "redis" } do
    for _, fname in ipairs(TLS_FAULTS) do
      cases[#cases + 1] = { server, F.by_name[fname], server .. "+tls", true }
    end
  end

  for index, case in ipairs(cases) do
    local server, fault, label, tls = case[1], case[2], case[3], case[4]
    local name = label .. "/" .. fault.name
    local seed = SEED or (BASE + index * 7919) % 2147483646
    if selected(name) then
      it(name .. " (seed " .. seed .. ")", function()
        if server == "redis" and not S.have_redis() then
          error("redis-server not installed")
        end
        local v = F.run_case(server, fault, seed, { lua = LUA, tls = tls })
        report(name, seed, v)
        if not v.ok then
          error(("%s, seed %d (rerun: RESILNET_CHAOS_SEED=%d "
                 .. "RESILNET_CHAOS_CASE=%s):\n  %s\n  %s")
                :format(name, seed, seed, name, v.summary,
                        table.concat(v.problems, "\n  ")), 0)
        end
      end)
    end
  end

  -- A resilnet server process used to die of SIGPIPE when it wrote to a
  -- connection its client had reset (exit 141; every later call failed).
  -- Every case above runs the server as a user would; these three were
  -- the ones that killed it.
  it("rnp server survives clients that reset with replies pending",
     function()
    for _, fname in ipairs { "close-fin-up", "stall-up", "half-close-down" } do
      local seed = SEED or 1
      local v = F.run_case("rnp", F.by_name[fname], seed, { lua = LUA })
      report("rnp/" .. fname, seed, v)
      assert(v.ok, table.concat(v.problems, "\n"))
    end
  end)

  it("examples/chaos_harness.lua runs to a clean verdict", function()
    local out = {}
    local p = assert(resilnet.process {
      LUA, "examples/chaos_harness.lua", tostring(SEED or BASE % 100000),
      stdout = function(chunk) out[#out + 1] = chunk end,
      stderr = function(chunk) out[#out + 1] = chunk end })
    local code, err = p:wait(60)
    if code == nil then
      p:close()
      error("the example did not finish in 60 s: " .. tostring(err))
    end
    p:close()
    local text = table.concat(out)
    assert.equal(0, code, text)
    assert.matches("verdict: OK", text, 1, true)
  end)
end)
