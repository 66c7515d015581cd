-- The specs' bounded wait, for a spec body, a task and a child script
-- alike: resilnet.sleep between polls, so the loop (and every call in
-- flight) runs meanwhile.
local resilnet = require "resilnet"

--- wait_for(cond, seconds, what, poll) -> cond()'s first true value. Polls
-- every poll seconds (default 0.01) for up to seconds, then raises
-- "<what> within <seconds> s" at the caller.
return function(cond, seconds, what, poll)
  local deadline = resilnet.now() + seconds
  repeat
    local v = cond()
    if v then return v end
    resilnet.sleep(poll or 0.01)
  until resilnet.now() > deadline
  error(what .. " within " .. seconds .. " s", 2)
end
