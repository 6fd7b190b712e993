-- Cancel a flow run: every task of it not finished ends "cancelled", the flow ends
-- "cancelled", and waiting clients wake. A task in its queue, retrying or scheduled (or
-- parked: the prelude's enqueue), quarantined or waiting in the gate leaves that set; a
-- leased task loses its lease (removing the member is the fencing check, so the worker's
-- late ack or failure of it is refused, as for a lease taken back); an inbox entry not
-- yet taken leaves the inbox, and a worker that took it is told on its cancels list, so
-- that it stops the run (balancer/cancel.py, worker/cancels.py). The caller lists the
-- flow's tasks: those of its `tasks` blob, those a @flow function added
-- (flow:<id>:tasks), and the children of each map expanded. An open run (a @flow
-- function's) is closed too: its function's count in `remaining` goes, and
-- flow_extend.lua refuses its next task as cancelled.
-- All or nothing: when a task reads queued but is neither in its queue, the gate nor under
-- the lease the caller saw (it was leased meanwhile), a map has expanded since the caller
-- looked (its `mapped` differs), or the function added tasks (flow:<id>:tasks is longer),
-- nothing is written and the ids come back, for the caller to look again. Calling it for
-- a flow already finished changes nothing.
-- KEYS: flow, flow done, delayed, dlq, deadlines, inflight, wake, gate, flow tasks, events,
--       tag-inflight; then per task: task, queue, and with a lease: leases, inbox, cancels
-- ARGV: ttl ms, task count, length of flow tasks seen, events cap, task events; then per
--       task: id, queue name, lease token, worker id, inbox entry, mapped seen
-- (One task.cancelled event holds every task cancelled; the flow.finished event says
-- cancelled.)
-- (lease token '': no lease seen, and no leases, inbox, cancels keys; inbox entry '':
-- none seen; mapped: the map's count of children, '' for a map not expanded or a task
-- that is no map.)
-- Returns {flow state, tasks cancelled, workers whose leases it took back...}, or
-- {'retry', task id...}, or {'missing', 0} when the flow has no record.
local ttl = tonumber(ARGV[1])
-- A worker reads its cancels list at once; one that does not within this long is dead
-- or cut off, and is reaped (its leases, these included, are gone by then).
local NOTICE_TTL = 600000
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', 0} end
if state ~= 'running' then return {state, 0} end
if redis.call('LLEN', KEYS[9]) ~= tonumber(ARGV[3]) then
  return {'retry', 'tasks added by the flow function'}
end
-- Whether `member` is in the sorted set `key`; a key of another type (a queue clobbered
-- by hand) holds no task: a task of it waits parked in the delayed set (prelude: enqueue).
local function in_zset(key, member)
  return type(redis.pcall('ZSCORE', key, member)) == 'string'
end
local tasks, unresolved = {}, {}
local a, k = 6, 12
for t = 1, tonumber(ARGV[2]) do
  local task = {key = KEYS[k], queue = KEYS[k + 1], id = ARGV[a], name = ARGV[a + 1],
                token = ARGV[a + 2], worker = ARGV[a + 3], entry = ARGV[a + 4]}
  k = k + 2
  if task.token ~= '' then
    task.leases, task.inbox, task.cancels = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    k = k + 3
  end
  -- A record of another type (clobbered by a Redis writer) is left as it is: it cannot be
  -- marked, and it must not keep the run from being cancelled.
  local s = redis.pcall('HMGET', task.key, 'state', 'deps', 'map', 'mapped')
  if s.err then s = {'unreadable', false, false, ARGV[a + 5]} end
  local st = s[1]
  if (s[4] or '') ~= ARGV[a + 5] then
    unresolved[#unresolved + 1] = task.id  -- a map expanded since the caller looked
  end
  a = a + 6
  if st == 'pending' or st == 'queued' then
    local leased = task.token ~= '' and
      redis.call('SISMEMBER', task.leases, task.id .. '|' .. task.token) == 1
    if not leased then task.token = '' end
    if not leased and not in_zset(task.queue, task.id) and not in_zset(KEYS[8], task.id)
        and not in_zset(KEYS[3], task.id)
        and not (st == 'pending' and tonumber(s[2] or '0') > 0) then
      unresolved[#unresolved + 1] = task.id
    end
    tasks[#tasks + 1] = task
  elseif st == 'running' and s[3] and task.token == '' then
    tasks[#tasks + 1] = task  -- a map waiting for its children (or in the gate to gather)
  elseif st == 'running' then
    if task.token == '' or
        redis.call('SISMEMBER', task.leases, task.id .. '|' .. task.token) == 0 then
      unresolved[#unresolved + 1] = task.id
    end
    tasks[#tasks + 1] = task
  elseif st == 'retrying' or st == 'scheduled' or st == 'dead' then
    task.token = ''
    tasks[#tasks + 1] = task
  end
end
if #unresolved > 0 then
  table.insert(unresolved, 1, 'retry')
  return unresolved
end
local now = now_ms()
events_to(KEYS[10], ARGV[4], ARGV[5])
local told, seen, records = {}, {}, {}
for _, task in ipairs(tasks) do
  if EVENTS.tasks and EVENTS.cap > 0 then
    local t = redis.call('HMGET', task.key, 'flow', 'name', 'ready')
    records[#records + 1] = task_record(task.id, t[1], task.name, t[2], t[3], '', now,
                                        'flow cancelled')
  end
  redis.call('HSET', task.key, 'state', 'cancelled', 'finished', now)
  redis.call('PEXPIRE', task.key, ttl)
  redis.pcall('ZREM', task.queue, task.id)  -- one of another type holds none of it
  redis.call('ZREM', KEYS[3], task.id)
  redis.call('ZREM', KEYS[4], task.id)
  redis.call('ZREM', KEYS[8], task.id)
  if task.token ~= '' then
    unlease(task.leases, task.id, task.token)
    if counted(task.token) then lease_count(KEYS[6], task.name, -1) end
    untag(task.key, KEYS[11], task.token)
    redis.call('ZREM', KEYS[5], task.id .. '|' .. task.worker .. '|' .. task.token)
    if task.entry == '' or redis.call('LREM', task.inbox, 1, task.entry) == 0 then
      redis.call('RPUSH', task.cancels, task.id .. '|' .. task.token)
      redis.call('PEXPIRE', task.cancels, NOTICE_TTL)
    end
    if not seen[task.worker] then
      seen[task.worker] = task.leases
      told[#told + 1] = task.worker
    end
  end
end
-- Their slots are free: the dispatcher reads the queues they serve that it does not know
-- empty (nothing was queued: 'settled').
for _, w in ipairs(told) do
  signal(KEYS[7], SIGNAL.settled, w, redis.call('SCARD', seen[w]))
end
redis.call('HINCRBY', KEYS[1], 'cancelled', #tasks)
local held = 0
if redis.call('HGET', KEYS[1], 'open') == '1' then
  -- A @flow function's run: its function's count goes too, and it takes no more tasks.
  held = 1
  redis.call('HSET', KEYS[1], 'open', '0')
  redis.call('PEXPIRE', KEYS[9], ttl)
end
redis.call('HINCRBY', KEYS[1], 'remaining', 0 - #tasks - held)  -- (-#t of 0 is "-0")
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished', now)
emit_tasks('task.cancelled', '', records)
if EVENTS.key and EVENTS.cap > 0 then
  local f = redis.call('HMGET', KEYS[1], 'id', 'name', 'total')
  emit('flow.finished', 'f', f[1] or '', 's', 'cancelled', 'm', f[2] or '', 'n', f[3] or '')
end
redis.call('RPUSH', KEYS[2], 'cancelled')
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
local out = {'cancelled', #tasks}
for _, w in ipairs(told) do out[#out + 1] = w end
return out
