-- resilnet.check, the history checker: each rule is shown to catch the
-- violation it exists for, and to pass a history that keeps it.
local resilnet = require "resilnet"

local check = resilnet.check

local function err(maybe)
  return { code = "ECONNRESET", maybe_executed = maybe }
end

describe("resilnet.check", function()
  it("passes a history that keeps every rule", function()
    local h = check.history()
    h:invoke("a", "plain"); h:complete("a", "ok")
    h:invoke("b", "plain"); h:complete("b", nil, err(false))
    h:invoke("c", "plain"); h:complete("c", nil, err(true))
    h:invoke("d", "keyed"); h:complete("d", nil, err(true))
    h:invoke("e", "idempotent"); h:complete("e", "ok")
    h:ledger { a = 1, c = 1, e = 2 }  -- d lost before it ran: allowed
    local v = h:assert()
    assert.is_true(v.ok)
    assert.equal(1, v.counts["plain ok"])
    assert.equal(1, v.counts["plain fail"])
    assert.equal(1, v.counts["plain info"])
  end)

  local cases = {
    { "a plain call that ran twice", function(h)
        h:invoke("a", "plain"); h:complete("a", "ok"); h:ledger { a = 2 }
      end, "ok but ran 2 times" },
    { "an ok call that never ran", function(h)
        h:invoke("a", "keyed"); h:complete("a", "ok"); h:ledger {}
      end, "ok but ran 0 times" },
    { "a fail that ran", function(h)
        h:invoke("a", "idempotent"); h:complete("a", nil, err(false))
        h:ledger { a = 1 }
      end, "maybe_executed = false but ran 1" },
    { "an info that ran twice", function(h)
        h:invoke("a", "plain"); h:complete("a", nil, err(true))
        h:ledger { a = 2 }
      end, "ran 2 times" },
    { "a call never completed", function(h)
        h:invoke("a", "plain"); h:ledger {}
      end, "never completed" },
    { "a call completed twice", function(h)
        h:invoke("a", "plain"); h:complete("a", "x"); h:complete("a", "y")
        h:ledger { a = 1 }
      end, "completed 2 times" },
    { "an unknown id in the ledger", function(h)
        h:invoke("a", "plain"); h:complete("a", "x"); h:ledger { a = 1, z = 1 }
      end, "z: in the ledger, never invoked" },
  }
  for _, case in ipairs(cases) do
    it("catches " .. case[1], function()
      local h = check.history()
      case[2](h)
      local v = h:verdict()
      assert.is_false(v.ok)
      assert.matches(case[3], table.concat(v.violations, "\n"), 1, true)
      assert.has_error(function() h:assert() end)
    end)
  end

  it("reads ledgers from files and adds ledgers up", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("a\nb\na\n")
    f:close()
    local counts = check.read_ledger(path)
    os.remove(path)
    assert.same({ a = 2, b = 1 }, counts)
    assert.same({}, check.read_ledger(path)) -- gone: empty
    local h = check.history()
    h:invoke("a", "idempotent"); h:complete("a", "ok")
    h:ledger { a = 1 }
    h:ledger { a = 1 }
    assert.is_true(h:verdict().ok)
    assert.has_error(function() h:invoke("x", "sometimes") end)
  end)
end)
