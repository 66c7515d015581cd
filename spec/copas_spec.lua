-- resilnet polled from copas (issue 21): resilnet.pollfd() waited on by
-- copas' own select, resilnet.timeout() bounding copas.step, next to a
-- copas TCP echo, against a real redis-server; replies that come late
-- must wake copas through the descriptor. Runs spec/hosts/copas_poll.lua
-- as its own process, on the Luas Debian's lua-copas 1.2 serves (5.1,
-- 5.2 and LuaJIT); skipped with the reason on the others.
local S = require "spec.helpers.host_script"

describe("from copas", function()
  if S.missing("copas", "copas (Debian lua-copas 1.2, for Lua 5.1 and "
                         .. "5.2)") then
    return
  end

  it("resilnet calls and a copas TCP echo progress; replies wake copas "
     .. "through resilnet.pollfd()", function()
    local _, echoes, calls = S.run_on_redis("spec/hosts/copas_poll.lua")
    assert.equals(200, echoes)
    assert.equals(220, calls)
  end)
end)
