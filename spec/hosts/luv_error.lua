-- A task that raises on luv's loop: reported the way luv reports its own
-- callbacks' errors (luv's default hook prints "Uncaught Error" and exits
-- the process). Prints "before" first, never "after".
local uv = require "luv"
local resilnet = require "resilnet"
resilnet.spawn(function()
  resilnet.sleep(0.01)
  error("boom from a resilnet task")
end)
print("before")
io.stdout:flush()
uv.run()
print("after")
