-- The fd check the other specs rely on (spec/helpers/util.lua) must count
-- exactly and must be able to fail.
local resilnet = require "resilnet"
local H = require "spec.helpers.util"

describe("fd check", function()
  after_each(H.cleanup)

  it("counts the same twice in a row, and sees one file open and close",
     function()
    resilnet.sleep(0)
    local a = H.open_fds()
    assert.equal(a, (H.open_fds()))
    local f = assert(io.open("/proc/self/stat"))
    local b, fds = H.open_fds()
    f:close()
    assert.equal(a + 1, b)
    local named = false
    for _, what in pairs(fds) do
      if what:match("/stat$") then named = true end
    end
    assert.is_true(named, "the open file is listed")
    assert.equal(a, (H.open_fds()))
  end)

  it("fails when a scenario leaves a descriptor open, naming it",
     function()
    local f
    local ok, err = pcall(H.assert_no_fd_leak, function()
      f = assert(io.open("/proc/self/stat"))
    end)
    f:close()
    assert.is_false(ok)
    local before, after = tostring(err):match(
      "file descriptors: (%d+) at the start, (%d+) after")
    assert.equal(tonumber(before) + 1, tonumber(after))
    assert.matches("%+ %d+ %-> /proc/%d+/stat", tostring(err))
  end)

  it("fails when a server and a pool are left open, passes once closed",
     function()
    local base = H.fd_baseline()
    local srv = assert(resilnet.server {
      listen = "127.0.0.1:0", protocol = "line",
      handler = function(r) return r end,
    })
    local host, port = srv:address()
    local pool = resilnet.pool { endpoints = { host .. ":" .. port },
                                 protocol = "line" }
    assert.equal("x", pool:call("x"))
    local ok, err = pcall(H.assert_fds, base)
    assert.is_false(ok)
    assert.matches("socket:%[", tostring(err))
    pool:close()
    srv:close()
    H.assert_fds(base)
  end)
end)
