-- Run by spec/hosts/static_host.c: prints what require "resilnet" did.
-- Loaded, it leaves a pool and a task on the host's loop, which the host
-- never runs: lua_close must close them, or the host's uv_loop_close
-- fails.
local ok, resilnet = pcall(require, "resilnet")
if ok then
  resilnet.pool{ endpoints = { "127.0.0.1:1" }, protocol = "resp" }
  resilnet.spawn(function() resilnet.sleep(60) end)
  print("loaded on " .. resilnet.loop())
else
  print("refused: " .. tostring(resilnet))
end
