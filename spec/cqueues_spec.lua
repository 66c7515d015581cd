-- resilnet polled from a cqueues controller (issue 21): resilnet.pollfd(),
-- resilnet.timeout() and resilnet.step() as a cqueues pollable, next to
-- cqueues' own timer and sockets, against a real redis-server. Runs
-- spec/hosts/cqueues_poll.lua as its own process, on every Lua that
-- Debian's lua-cqueues serves (5.1 to 5.4, and LuaJIT through 5.1's).
local S = require "spec.helpers.host_script"

describe("from a cqueues controller", function()
  if S.missing("cqueues", "cqueues (Debian lua-cqueues)") then return end

  it("resilnet calls, a cqueues timer and a cqueues TCP echo all "
     .. "progress", function()
    local ticks, echoes, calls = S.run_on_redis("spec/hosts/cqueues_poll.lua")
    assert.is_true(ticks > 0)
    assert.equals(200, echoes)
    assert.equals(200, calls)
  end)
end)
