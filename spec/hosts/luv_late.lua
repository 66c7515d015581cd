-- resilnet loaded before luv, then moved onto luv's loop with
-- resilnet.use_loop("luv"); a pool left open at exit. The context (made
-- first) is finalized after luv's loop: the anchor use_loop made must
-- close resilnet's handles before luv's finalizer walks the loop.
--   lua luv_late.lua <redis port>   -> prints "ok <reply>"
local resilnet = require "resilnet"
assert(resilnet.loop() == "own")
local uv = require "luv"
assert(resilnet.loop() == "own", "loading luv later must not switch loops")
resilnet.use_loop("luv")
assert(resilnet.loop() == "luv")
local pool = resilnet.pool{ endpoints = { "127.0.0.1:" .. arg[1] },
                            protocol = "resp", size = 2 }
-- Switching with a pool open is refused, and names why.
local ok, err = pcall(resilnet.use_loop, "own")
assert(not ok and tostring(err):find("choose the loop before creating any",
                                     1, true), tostring(err))
local reply
resilnet.spawn(function()
  reply = assert(pool:call({ "PING" }))
end)
uv.run()
print("ok " .. tostring(reply))
