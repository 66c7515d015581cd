-- resilnet: pooled, resilient TCP clients and servers on libuv.
--
-- This file assembles the public table from one module per concern in
-- lua/resilnet/: tasks (the dispatcher, waiting, closing), options (the
-- schemas), pool, server, proxy and process. The facade owns every
-- suspension: the C core never yields and never calls Lua on its own (see
-- resilnet/tasks.lua). Each module but options returns a constructor
-- called here with the core, so every load of resilnet has its own state.
local core = require "resilnet.core"
local options = require "resilnet.options"

local resilnet = {}

resilnet._VERSION = "resilnet " .. core.version
-- Compares equal across reloads (a NULL light userdata, like cjson.null).
resilnet.null = core.null
resilnet.error_metatable = core.error_metatable

--- True if v is a resilnet error object.
function resilnet.is_error(v)
  return core.is_error(v)
end

local tasks = require("resilnet.tasks")(core)
resilnet.spawn, resilnet.run, resilnet.sleep = tasks.spawn, tasks.run,
  tasks.sleep
resilnet.step = tasks.step

--- Which loop resilnet runs on: "own", or "luv" (luv's, shared: see
-- docs/api.md "Inside your event loop").
resilnet.loop = core.loop
--- Chooses the loop ("own" or "luv"; "luv" requires luv) while nothing
-- lives on the current one.
function resilnet.use_loop(kind)
  if kind == "luv" then
    require "luv"
  elseif kind ~= "own" then
    error("resilnet.use_loop: expected \"own\" or \"luv\", got "
          .. tostring(kind), 2)
  end
  core.use_loop(kind)
end
--- For hosts that poll: the descriptor that gets readable when the loop
-- has news, and the seconds until it needs a step regardless (nil: none).
resilnet.pollfd, resilnet.timeout = core.pollfd, core.timeout
--- Monotonic seconds (float), for measuring intervals.
resilnet.now = tasks.now

-- The schemas, as the documentation lists them (compared by a test).
resilnet._options = options.schemas

resilnet.pool = require("resilnet.pool")(core, tasks).new
resilnet.server = require("resilnet.server")(core, tasks).new
-- For test harnesses (docs/harness.md): fault injection, child processes.
resilnet.proxy = require("resilnet.proxy")(core, tasks).new
resilnet.process = require("resilnet.process")(core, tasks).new

--- resilnet.check: the history checker for fault-injection tests
-- (lua/resilnet/check.lua; pure Lua).
resilnet.check = require "resilnet.check"

return resilnet
