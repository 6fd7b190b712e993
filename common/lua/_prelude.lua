-- Prepended to every script at registration (common/scripts.py): helpers shared by scripts.
-- Every key a script touches arrives in KEYS; scripts never build key names.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A length-prefixed field "<len>:<bytes>" (event task records; lease entries alike). The
-- length goes through %d: a number concatenated is formatted as a float (%.14g), which
-- costs twice the time, twenty times per task.
local function lp(v)
  if v == nil or v == false then return '0:' end
  v = tostring(v)
  return string.format('%d:', #v) .. v
end

-- The events stream (common/events.py owns its kinds and format). A script that writes
-- events first calls events_to with its events key, the cap (BALANCER_EVENTS_MAX of its
-- caller; 0: write none) and '1' when per-task kinds are wanted (BALANCER_TASK_EVENTS).
-- `flows`: false, or, in a script that writes the flows it settles into its task entry
-- (ack.lua: emit_tasks_and_flows), the flows settled so far.
-- `maxlen`: the cap as XADD is given it, the caller's digits when they are only digits (a
-- Lua number passed to redis.call is formatted anew at every call).
local EVENTS = {key = false, cap = 0, maxlen = '0', tasks = false, flows = false}
local function events_to(key, cap, tasks)
  EVENTS.key, EVENTS.cap, EVENTS.tasks = key, tonumber(cap) or 0, tasks == '1'
  EVENTS.maxlen = string.find(cap or '', '^%d+$') and cap or string.format('%d', EVENTS.cap)
end
-- An event is news, not state: an events key of another type (written by hand) loses the
-- events, never the call that tells them (pcall).
local function emit(kind, ...)
  if EVENTS.key and EVENTS.cap > 0 then
    redis.pcall('XADD', EVENTS.key, 'MAXLEN', '~', EVENTS.maxlen, '*', 'k', kind, ...)
  end
end
-- One task of a task event's "t" field (events.task_record).
local function task_record(id, flow, queue, name, ready, started, finished, detail)
  return lp(id) .. lp(flow) .. lp(queue) .. lp(name) .. lp(ready) .. lp(started)
    .. lp(finished) .. lp(detail)
end
-- One entry for every task a call changed the same way: a batch costs one write.
local function emit_tasks(kind, worker, records)
  if EVENTS.tasks and #records > 0 then
    emit(kind, 'w', worker or '', 't', table.concat(records))
  end
end
-- A flow settled: its flow.finished event, an entry of its own, or, while the script
-- collects them (EVENTS.flows), a record of the "ff" field of its task entry
-- (events.flow_record): id, state, name, task count.
local function flow_finished(id, state, name, total)
  if EVENTS.flows then
    EVENTS.flows[#EVENTS.flows + 1] = {id, state, name, total}
  else
    emit('flow.finished', 'f', id, 's', state, 'm', name, 'n', total)
  end
end
-- The task entry of a script that collected the flows it settled (EVENTS.flows, set
-- when task events are on): the tasks and the flows in one write, a one-task flow's ack
-- one XADD instead of two. Flows settled without a task record (none: every flow an ack
-- settles has one of its tasks stored) would get entries of their own.
local function emit_tasks_and_flows(kind, worker, records)
  local flows = EVENTS.flows or {}
  EVENTS.flows = false
  if #records == 0 or #flows == 0 then
    emit_tasks(kind, worker, records)
    for _, f in ipairs(flows) do flow_finished(f[1], f[2], f[3], f[4]) end
    return
  end
  local ff = {}
  for i, f in ipairs(flows) do ff[i] = lp(f[1]) .. lp(f[2]) .. lp(f[3]) .. lp(f[4]) end
  emit(kind, 'w', worker or '', 't', table.concat(records), 'ff', table.concat(ff))
end
-- A single task's event, its record read from its hash (failures, quarantines: rare).
local function emit_task(kind, task_key, id, worker, detail, started, finished)
  if not EVENTS.tasks or not EVENTS.key or EVENTS.cap <= 0 then return end
  local t = redis.call('HMGET', task_key, 'flow', 'queue', 'name', 'ready')
  emit_tasks(kind, worker, {task_record(id, t[1], t[2], t[3], t[4], started, finished,
                                        detail)})
end

-- Signals for the dispatcher on the wake list. common/signals.py owns their formats and
-- reads them; this table mirrors its LUA_KINDS, and every signal a script pushes is built
-- by `signal` below (a test checks both). The list keeps at most WAKE_CAP signals, the
-- oldest going first: signals are hints, sent whether or not a dispatcher reads them
-- (common/protocol.py: WAKE_CAP).
local WAKE_CAP = 10000
local SIGNAL = {submitted = 's', retry = 'r', ack = 'a', settled = 'k', offer_taken = 'l',
                heartbeat = 'h', cascade = 'c', queues = 'q', schedules = 't'}

-- Push a signal as built (by `signal`, or by the client: submit_small.lua), capped. A wake
-- list of another type (clobbered by a Redis writer) loses the signal, never the call:
-- a signal is a hint, and a script stopped at it would be half applied.
local function signal_capped(wake_key, raw)
  local n = redis.pcall('RPUSH', wake_key, raw)
  if type(n) == 'number' and n > WAKE_CAP then
    redis.call('LTRIM', wake_key, -WAKE_CAP, -1)
  end
end

-- Push the signal of that kind (a SIGNAL value), its fields joined by "|".
local function signal(wake_key, kind, ...)
  if select('#', ...) == 0 then return signal_capped(wake_key, kind) end
  signal_capped(wake_key, kind .. '|' .. table.concat({...}, '|'))
end

-- Tasks of a flow reached a terminal state (`failed` of them unsuccessfully). The last one
-- settles the flow (at `at` ms, now by default) and pushes its final state onto the flow's
-- done list, which waiting clients BLPOP. A flow judged by its reference tasks (Prefect
-- 1's rule: its record has "refs", balancer/submit.py) fails only when one of those
-- failed: a failure also counts in "ref_failed" when its task (`task_key`) has "ref".
-- A counter a Redis writer made no number ends that flow as failed, its record saying
-- which ("broken"), instead of failing the script: the script is a worker's ack of a
-- whole batch, which would otherwise be refused for good, and the flow never end.
local function flow_counted(flow_key, field, by)
  local ok = redis.pcall('HINCRBY', flow_key, field, by)
  if type(ok) == 'table' and ok.err then return nil end
  return ok
end
-- `f`: the flow's id, name and total as the caller read them (nil: read here).
local function flow_settle(flow_key, done_key, state, ttl_ms, at, broken, f)
  redis.call('HSET', flow_key, 'state', state, 'finished', at or now_ms())
  if broken then redis.call('HSET', flow_key, 'broken', broken, 'remaining', -1) end
  if EVENTS.key and EVENTS.cap > 0 then
    f = f or redis.call('HMGET', flow_key, 'id', 'name', 'total')
    flow_finished(f[1] or '', state, f[2] or '', f[3] or '')
  end
  redis.call('RPUSH', done_key, state)
  redis.call('PEXPIRE', done_key, ttl_ms)
  redis.call('PEXPIRE', flow_key, ttl_ms)
end
local function flow_tasks_done(flow_key, done_key, n, failed, ttl_ms, at, task_key)
  local broken = false
  if failed > 0 then
    if not flow_counted(flow_key, 'failed', failed) then broken = 'failed' end
    if task_key and redis.call('HGET', task_key, 'ref') == '1'
        and not flow_counted(flow_key, 'ref_failed', failed) then
      broken = 'ref_failed'
    end
  end
  local left = flow_counted(flow_key, 'remaining', -n)
  if not left then
    -- Settled once: "remaining" is then -1 and counts down, never to 0 again.
    return flow_settle(flow_key, done_key, 'failed', ttl_ms, at, 'remaining')
  end
  if left == 0 then
    local state = 'completed'
    -- What the outcome needs, and what the flow.finished event says, in one read.
    local counts = redis.call('HMGET', flow_key, 'failed', 'refs', 'ref_failed', 'id', 'name',
                              'total')
    local failures, field = counts[1], 'failed'
    if counts[2] == '1' then failures, field = counts[3], 'ref_failed' end
    local number = tonumber(failures or '0')
    if not number then broken = field end
    if broken or number > 0 then state = 'failed' end
    flow_settle(flow_key, done_key, state, ttl_ms, at, broken, {counts[4], counts[5], counts[6]})
  end
end

-- A lease is the member "id|token" of its worker's leases set; the token is new for every
-- lease. Removing the member is the fencing check: it succeeds once, for the holder of
-- the current lease, and never for a late ack of a lease that was taken back.
local function unlease(leases_key, id, token)
  return redis.call('SREM', leases_key, id .. '|' .. token) == 1
end

-- Lease tokens: "<epoch>.<batch>[u].<index>[t][!]", the grammar in common/protocol.py.
-- The caller passes the prefix "<epoch>.<batch>[u]"; the index and the tag and suspect
-- marks are added here. Only leases of queues with a concurrency limit are counted in
-- `inflight` (one write per batch saved everywhere else): the others end their batch with
-- "u". A token not of the grammar counts, as in protocol.is_counted.
local UNCOUNTED_TOKEN = '^%d+%.%w+u%.%d+t?!?$'
local function lease_token(prefix, index, suspect, tagged)
  local token = prefix .. '.' .. index
  if tagged then token = token .. 't' end
  if suspect then token = token .. '!' end
  return token
end
local function counted(token)
  return not string.find(token, UNCOUNTED_TOKEN)
end

-- Add `by` to a count of leases: a queue's (`inflight`) or a tag's (`tag-inflight`). A
-- count a Redis writer made no number stays as it is (the dispatcher reports it and leases
-- nothing more of that queue or tag until it is fixed) instead of failing the script: an
-- acknowledgement refused for it would be retried by its worker for ever. The new count,
-- or nil.
local function lease_count(key, field, by)
  local n = redis.pcall('HINCRBY', key, field, by)
  if type(n) == 'table' and n.err then return nil end
  return n
end

-- Tag limits (balancer/taglimits.py). A lease of a task with a limited tag is tag-counted: its
-- token carries "t", each tag the dispatcher counted it for (comma-joined: tags hold no
-- comma) goes up by one in `tag-inflight`, and its task record's "tagged" field says
-- "<token>|<tags>". Every path that ends a lease calls `untag` once its unlease (the
-- fencing check) succeeded, so a tag's place comes back exactly once; a lease without
-- "t" (every lease while no tag has a limit) costs nothing here.
local TAGGED_TOKEN = '^%d+%.%w+%.%d+t!?$'
local function tag_counted(token)
  return string.find(token, TAGGED_TOKEN) ~= nil
end
local function tag_lease(task_key, tag_key, token, tags)
  for tag in string.gmatch(tags, '[^,]+') do lease_count(tag_key, tag, 1) end
  redis.call('HSET', task_key, 'tagged', token .. '|' .. tags)
end
-- Give back the tags the lease `token` of this task counted. Returns how many.
local function untag(task_key, tag_key, token)
  if not tag_counted(token) then return 0 end
  local given = redis.call('HGET', task_key, 'tagged')
  if not given or string.sub(given, 1, #token + 1) ~= token .. '|' then return 0 end
  local n = 0
  for tag in string.gmatch(string.sub(given, #token + 2), '[^,]+') do
    local left = lease_count(tag_key, tag, -1)
    if left and left <= 0 then redis.call('HDEL', tag_key, tag) end
    n = n + 1
  end
  redis.call('HDEL', task_key, 'tagged')
  return n
end

-- Put task `id` into its queue (or the gate) at `score`. A key of another type there
-- (written by hand) refuses it: the task then waits in the delayed set, looked at again
-- every PARK_MS until the key is fixed (promote.lua), in whatever state the caller left
-- it, and the dispatcher is told as of a retry (`wake_key`; nil: the caller is the
-- dispatcher). A script that already wrote must not stop halfway on that refusal: the task
-- would be settled or re-leased on one side and in no queue on the other, lost for good.
-- Whether it went into its queue.
local PARK_MS = 2000
local function park(id, delayed_key, wake_key)
  redis.call('ZADD', delayed_key, now_ms() + PARK_MS, id)
  if wake_key then signal(wake_key, SIGNAL.retry) end
end
local function enqueue(queue_key, score, id, delayed_key, wake_key)
  if type(redis.pcall('ZADD', queue_key, score, id)) ~= 'table' then return true end
  park(id, delayed_key, wake_key)
  return false
end

-- One upstream of dependent `id` (its record `task_key`) settled: when it was the last,
-- the dependent goes into its queue (or the gate) at `score` (enqueue). A record a Redis
-- writer clobbered (not a hash, or its count no number) is passed over: it could never
-- run, and the call must not stop halfway for it (its siblings unlocked, the flow's
-- counts kept). Whether it was made ready.
local function unlock(task_key, queue_key, score, id, delayed_key, wake_key)
  if redis.pcall('HINCRBY', task_key, 'deps', -1) ~= 0 then return false end
  enqueue(queue_key, score, id, delayed_key, wake_key)
  return true
end

-- Put a task back into its queue at its original place (``ready``: when it is ready
-- again, for its wait time; nil keeps when it first was).
local function requeue(task_key, queue_key, id, delayed_key, wake_key, ready)
  if ready then
    redis.call('HSET', task_key, 'state', 'queued', 'ready', ready)
  else
    redis.call('HSET', task_key, 'state', 'queued')
  end
  redis.call('HDEL', task_key, 'worker')
  enqueue(queue_key, redis.call('HGET', task_key, 'score') or 0, id, delayed_key, wake_key)
end

-- Quarantine a task whose runs keep killing workers. It stays in its flow, which waits
-- until an operator retries it (`balancer dlq retry`) or gives it up (`balancer dlq purge`).
local function quarantine(task_key, dlq_key, id, error)
  redis.call('HSET', task_key, 'state', 'dead', 'error', error, 'finished', now_ms())
  redis.call('HDEL', task_key, 'worker')
  redis.call('ZADD', dlq_key, now_ms(), id)
end

-- Fail a task for good: it settles in its flow, and its dependents are queued for failing.
local function fail_for_good(task_key, id, error, flow_key, done_key, cascade_key, wake_key, ttl)
  redis.call('HSET', task_key, 'state', 'failed', 'error', error, 'finished', now_ms())
  redis.call('PEXPIRE', task_key, ttl)
  if tonumber(redis.call('HGET', task_key, 'nchildren') or '0') > 0 then
    redis.call('RPUSH', cascade_key, id)
    signal(wake_key, SIGNAL.cascade)
  end
  flow_tasks_done(flow_key, done_key, 1, 1, ttl, nil, task_key)
end

-- The dependents of a failed task must never be queued: their unmet count stays high.
local NEVER = 1000000000

-- Lease tasks of one queue to one worker, in order, at most `free` of them. Each lease
-- carries the whole task spec into the worker's inbox, so the worker needs no further read
-- to run it. The task record is not written: the lease member "id|token" in the worker's
-- leases set is the lease (its state reads "queued" until it is marked running or settled,
-- and its absence from the queue tells it is leased). A task held ahead by a worker that
-- died (``suspect``) gets a token ending in "!": a pool child tells Redis when it starts
-- it (worker/batchslot.py), so that a run that kills its worker counts. A task with a
-- timeout gets a deadline "id|worker|token", which the dispatcher fails when it is due.
-- An id without a task record leaves the queue without taking a slot: nothing could run
-- it.
-- Used by assign.lua (the dispatcher) and submit_small.lua (a submit taking a standing
-- offer: it passes `specs`, the fields it is writing, for tasks it never queued). `depth`
-- (the prefetch per slot the dispatcher chose, or nil), for a pool child to take its
-- batches by (common/prefetch.py), then when the task became ready (ms, for its wait time
-- in the events) end each entry.
-- `tags` (assign.lua, or nil), per id the tags to count its lease against ('' none):
-- see tag_lease.
-- Returns leased, dropped, deadlines set.
local LEASE_SPEC = {'fn', 'args', 'timeout', 'flow', 'children', 'name', 'suspect', 'sig',
                    'ready'}
local function lease_tasks(ids, task_keys, queue_key, inbox_key, leases_key, inflight_key,
                           deadlines_key, worker, queue, prefix, free, grace_ms, specs,
                           depth, tags, tag_key)
  local depth_field = lp(depth)
  local removing, entries, members, deadlines, tagged = {}, {}, {}, {}, {}
  local n, dropped = 0, 0
  for i = 1, #ids do
    if n >= free then break end
    local id = ids[i]
    removing[#removing + 1] = id
    local s = specs and specs[i] or redis.call('HMGET', task_keys[i], unpack(LEASE_SPEC))
    if not s[1] then
      dropped = dropped + 1
    else
      n = n + 1
      local counts = tags and tags[i] ~= '' and tags[i]
      local token = lease_token(prefix, n, s[7], counts)
      if counts then tagged[#tagged + 1] = {task_keys[i], token, counts} end
      entries[n] = id .. '|' .. token .. '|' .. lp(queue) .. lp(s[4]) .. lp(s[3])
        .. lp(s[1]) .. lp(s[6]) .. lp(s[5]) .. lp(s[2]) .. lp(s[8])
        .. depth_field .. lp(s[9])
      members[n] = id .. '|' .. token
      local timeout = tonumber(s[3] or '')
      if timeout then
        deadlines[#deadlines + 1] = math.floor(timeout * 1000) + grace_ms
        deadlines[#deadlines + 1] = id .. '|' .. worker .. '|' .. token
      end
    end
  end
  -- The tasks leave their queue last: a script that fails midway (a key of the wrong type)
  -- keeps what it wrote before, and a task must never be out of its queue and leased
  -- nowhere. Leased and still queued, it may run twice, which at-least-once allows.
  if n > 0 then
    redis.call('RPUSH', inbox_key, unpack(entries))
    redis.call('SADD', leases_key, unpack(members))
    if counted(lease_token(prefix, 1)) then lease_count(inflight_key, queue, n) end
    for _, t in ipairs(tagged) do tag_lease(t[1], tag_key, t[2], t[3]) end
    if #deadlines > 0 then
      local now = now_ms()
      for d = 1, #deadlines, 2 do deadlines[d] = deadlines[d] + now end
      redis.call('ZADD', deadlines_key, unpack(deadlines))
    end
  end
  if #removing > 0 and not specs then redis.call('ZREM', queue_key, unpack(removing)) end
  return n, dropped, #deadlines / 2
end

-- Take up to `count` entries from a worker's inbox, keeping only those whose lease the
-- worker holds: anyone who can push to the inbox could otherwise make the worker run what
-- they wrote. With `fetched_key`, the entry a blocking fetch moved there comes first.
-- Used by take.lua and ack.lua. Returns the entries taken, the entries dropped.
local function take_held(inbox_key, leases_key, count, fetched_key)
  local popped = {}
  if fetched_key then popped = redis.call('LPOP', fetched_key, count) or {} end
  local left = tonumber(count) - #popped
  if left > 0 then
    for _, entry in ipairs(redis.call('LPOP', inbox_key, left) or {}) do
      popped[#popped + 1] = entry
    end
  end
  local taken, forged, entries, members = {}, {}, {}, {}
  for _, entry in ipairs(popped) do
    if entry ~= '' then  -- '': the sentinel that ends a blocked fetch, nothing to run
      entries[#entries + 1] = entry
      members[#members + 1] = string.match(entry, '^[^|]*|[^|]*') or entry
    end
  end
  if #entries == 0 then return taken, forged end
  local held = redis.call('SMISMEMBER', leases_key, unpack(members))
  for i = 1, #entries do
    if held[i] == 1 then taken[#taken + 1] = entries[i] else forged[#forged + 1] = entries[i] end
  end
  return taken, forged
end
