-- A policy function (retry.classify) that answers nonsense on luv's loop:
-- reported through luv's callback hook like a callback's error (luv's
-- default hook prints "Uncaught Error" and exits). Prints "before" first.
--   lua luv_policy_error.lua <redis port>
local uv = require "luv"
local resilnet = require "resilnet"
local pool = resilnet.pool{ endpoints = { "127.0.0.1:" .. arg[1] },
  protocol = "resp",
  retry = { classify = function() return "bogus" end } }
resilnet.spawn(function() pool:call({ "NOSUCHCOMMAND" }) end)
print("before")
io.stdout:flush()
uv.run()
print("after")
