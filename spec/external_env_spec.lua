-- Regression: under a sanitizer spec run, the redis-servers the specs
-- started (spec/helpers/redis.lua's R.launch and R.start) inherited the
-- run's LD_PRELOAD, ASan's runtime: a restarted redis-server loading 2M
-- keys under ASan's allocator outlasted the 10 s wait for it. Programs that
-- are not resilnet's now start through P.external (spec/helpers/process.lua).
--
-- A child Lua process, whose LD_PRELOAD names one harmless library more
-- than this run's (glibc's libanl, an empty stub nobody links: so the case
-- provokes the inheritance in a plain run too), starts redis-server each
-- way and looks for that library in the server's memory map. (Not its
-- /proc environ: redis-server writes its process title over it.)
local resilnet = require "resilnet"
local H = require "spec.helpers.util"
local P = require "spec.helpers.process"
local R = require "spec.helpers.redis"

local child = [[
local R = require "spec.helpers.redis"
local T = require "spec.helpers.tls_redis"
local function environment(pid)
  local f = assert(io.open("/proc/" .. pid .. "/maps"))
  local maps = f:read("*a")
  f:close()
  return maps:find("/libanl.so", 1, true) and "preloaded" or "clean"
end
io.write("self ", environment("self"), "\n")
local launched = R.launch(R.free_port(), {}, "/dev/null")
io.write("launch ", environment(launched.proc:pid()), "\n")
launched:close()
local started = assert(R.start())
io.write("start ", environment(started.pid), "\n")
R.stop(started)
local tls = assert(T.start())
io.write("tls ", environment(tls.pid), "\n")
T.stop(tls)
T.remove_certs()
]]

describe("programs the specs start that are not resilnet's", function()
  after_each(H.cleanup)

  it("run without the spec run's LD_PRELOAD (redis-server: R.launch, "
     .. "R.start, tls_redis)", function()
    assert(R.installed(), "redis-server not installed")
    local out = {}
    local function keep(chunk) out[#out + 1] = chunk end
    local preload = ((os.getenv("LD_PRELOAD") or "") .. " libanl.so.1")
      :gsub("^ ", "")
    local p = assert(resilnet.process { P.LUA, "-e", child,
                                        env = { LD_PRELOAD = preload },
                                        stdout = keep, stderr = keep })
    local code = p:wait(60)
    p:close()
    local text = table.concat(out)
    assert.equals(0, code, text)
    -- The child had it: the case is real.
    assert.truthy(text:find("self preloaded", 1, true), text)
    for _, way in ipairs { "launch", "start", "tls" } do
      assert.truthy(text:find(way .. " clean", 1, true), text)
    end
  end)
end)
