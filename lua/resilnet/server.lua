-- resilnet.server: servers whose handlers run as tasks, and Lua dedupe
-- stores driven by the core.
-- Returns a constructor: build(core, tasks) -> { new = resilnet.server }.
local opt = require "resilnet.options"

local coroutine, error, pairs, setmetatable, tostring, type = coroutine,
      error, pairs, setmetatable, tostring, type
local validate, ms, check_table = opt.validate, opt.ms, opt.check_table
local server_schema, server_close_schema = opt.schemas.server,
      opt.schemas.server_close
local tls_fields = opt.entry(server_schema, "tls")[2].table

return function(core, T)
  local S = {}
  local tasks, resume = T.tasks, T.resume
  local add_handler, deliver, close_and_wait = T.add_handler, T.deliver,
        T.close_and_wait

  local Server = {}
  Server.__index = Server

  local function error_value(err)
    if type(err) == "string" or core.is_error(err) then
      return err
    end
    return tostring(err)
  end

  -- A handler task finished: answer its request exactly once.
  local function finish_request(info, ok, reply, err)
    local req = info.req
    if not ok then
      return core.request_fail(req, error_value(reply))
    end
    if reply == nil and err ~= nil then
      return core.request_fail(req, error_value(err))
    end
    if core.is_error(reply) then
      return core.request_fail(req, reply)
    end
    if info.stringify then
      reply = reply == nil and "" or tostring(reply)
    end
    return core.request_reply(req, reply)
  end

  local server_events = { overload = true, deadline = true, goaway = true,
                          protocol = true, idle = true, store = true,
                          backlog = true, frame_timeout = true, budget = true,
                          max_connections = true, max_elements = true,
                          dedupe_full = true, write_timeout = true,
                          tls = true, auth = true }

  -- A Lua dedupe store, driven by the core's dedupe logic: each operation
  -- runs the store's method in a task (it may wait, e.g. on a resp pool) and
  -- reports back. A method that raises is a bug: recorded like any task
  -- error (run() re-raises it) and the operation fails; one that returns
  -- nil, err is a store failure (claims are refused as not executed).
  local function store_runner(store)
    local function done(info, ok, a, b, c)
      core.dedupe_done(info.op, ok, a, b, c)
      if not ok then
        core.fail(a)
      end
    end
    return function(op, method, key, window, reply, failed)
      local co = coroutine.create(function()
        if method == "claim" then
          return store:claim(key, window)
        elseif method == "finish" then
          return store:finish(key, reply, failed, window)
        end
        return store:release(key)
      end)
      -- Not the coroutine itself in its entry: Lua 5.1's weak keys are not
      -- ephemerons, and an abandoned store task must stay collectable (its
      -- op's __gc then fails the operation, so the server can finish).
      tasks[co] = { done = done, op = op }
      return resume(co)
    end
  end

  --- resilnet.server{listen = "127.0.0.1:0", handler = fn, ...} -> server.
  -- handler(request, ctx) runs as a task per request; what it returns is the
  -- reply; an error (raised, an error object, or nil, err) becomes an error
  -- reply for resp and rnp (APPLICATION) and closes the connection for
  -- line/length. ctx.server, ctx.peer ("host:port" of the client, nil if it
  -- is gone), ctx.peer_subject (with tls.verify_client: the client
  -- certificate's subject, "CN=...,O=..."; else nil). rnp also: ctx.id (an
  -- integer, or its decimal text past what a Lua number holds exactly),
  -- ctx.deadline (seconds left when the handler started, or nil), ctx.key,
  -- ctx.idempotent, ctx.identity (with auth: who the connection
  -- authenticated as).
  -- auth = function(token, subject) is auth = {check = function ...}.
  function S.new(opts)
    if type(opts) == "table" and type(opts.auth) == "function" then
      local copy = {}
      for k, v in pairs(opts) do copy[k] = v end
      copy.auth = { check = opts.auth }
      opts = copy
    end
    local o = validate("resilnet.server", server_schema, opts)
    local self = setmetatable({ options = o, _handler = o.handler,
                                _handlers = {} }, Server)
    local stringify = o.protocol ~= "resp"
    local rnp = o.protocol == "rnp"
    -- The binding holds on_request in the registry: it reaches the server
    -- only weakly, so a server nobody references is collected and closed.
    local weak = setmetatable({ self }, { __mode = "v" })
    local function on_request(value, req, peer, subject, id, deadline, key,
                              idempotent, identity)
      local srv = weak[1]
      if not srv then
        return core.request_fail(req, "server closed")
      end
      local ctx
      if rnp then
        ctx = { server = srv, peer = peer, peer_subject = subject, id = id,
                deadline = deadline, key = key, idempotent = idempotent,
                identity = identity }
      else
        ctx = { server = srv, peer = peer, peer_subject = subject }
      end
      local co = coroutine.create(srv._handler)
      tasks[co] = { done = finish_request, req = req, stringify = stringify }
      return resume(co, value, ctx)
    end
    local dd = o.dedupe
    -- The binding reads (and checks) the caller's own table: what is left
    -- out keeps the core's default.
    local h, err = core.server_new(opts, on_request,
                                   dd and dd.store and store_runner(dd.store)
                                   or nil)
    if not h then
      return nil, err
    end
    self._h = h
    core.server_on(h, function(ev)
      local srv = weak[1]
      if srv then deliver(srv, ev) end
    end)
    return self
  end

  --- server:address() -> host, port (port 0 for unix sockets).
  function Server:address()
    return core.server_address(self._h)
  end

  --- server:on(event, fn): fn(ev) for every event of that type: "overload"
  -- (a request refused past max_concurrent and queue), "deadline" (refused:
  -- its deadline passed before it started), "goaway", "protocol" (a
  -- connection closed for a malformed frame), "idle", "store" (the dedupe
  -- store failed), "dedupe_full" (a new key refused: the memory store is at
  -- capacity with every key inside its window), and the limits for
  -- untrusted clients: "backlog", "frame_timeout", "budget",
  -- "max_connections", "max_elements", "write_timeout" (see
  -- docs/operations.md), "tls" (a connection's handshake or a record
  -- failed; ev.error, ev.detail says why) and "auth" (rnp: a connection's
  -- credentials refused, nothing of it ran; ev.detail). fn runs
  -- as a plain callback: it cannot wait.
  function Server:on(event, fn)
    add_handler(self, "server:on", server_events, event, fn)
    return self
  end

  --- server:stats() -> table of counters (requests, handled, overloaded,
  -- expired, replayed, joined, busy, discarded, protocol_errors, the
  -- limits' idle_timeouts, frame_timeouts, budget_refused,
  -- connections_refused, elements_refused, backlogged, write_timeouts,
  -- tls_errors, auth_refused) and
  -- gauges (open,
  -- active, queued, buffered_in, buffered_out).
  function Server:stats()
    return core.server_stats(self._h)
  end

  --- server:reload_tls{certificate = ..., key = ..., cafile = ..., ...}:
  -- certificate rotation. The files are read now; connections accepted
  -- from now on use them, open ones keep theirs. true, or nil, err if a
  -- file cannot be used (nothing changes then); raises on bad options or
  -- a server made without tls.
  function Server:reload_tls(opts)
    if type(opts) ~= "table" then
      error("server:reload_tls: expected a table of TLS options, got "
            .. type(opts), 2)
    end
    check_table("server:reload_tls", "", tls_fields, opts, 3)
    return core.server_reload_tls(self._h, { tls = opts })
  end

  --- server:close{}: stops listening, closes connections, waits until done.
  -- server:close{goaway = true, drain = s}: stops listening, announces
  -- GOAWAY (rnp), lets accepted requests finish for up to s seconds (5 if
  -- only goaway is given), then closes; waits until done.
  function Server:close(opts)
    local o = validate("server:close", server_close_schema, opts)
    local h = self._h
    return close_and_wait("server:close", self, false, function(on_closed)
      local drain = o.drain or (o.goaway and 5 or nil)
      core.server_close(h, on_closed, drain and ms(drain) or nil)
    end)
  end

  return S
end
