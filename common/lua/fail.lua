-- A run of a task did not succeed. Mode "retry": retry later, after its retry delay,
-- while retries are left, else fail. Mode "final": fail now. Mode "crash": the run killed
-- its process; put the task back at once, or quarantine it once it has killed
-- `poison threshold` processes. Mode "quarantine": quarantine it now. Mode "skip": the task
-- raised SKIP (Prefect 1): it settles as skipped, a success, and its dependents are
-- queued for the skip cascade. Mode "again": it raised RETRY: retry after its retry delay
-- whether or not retries are left (Prefect 1's RETRY signal). Idempotent for the same
-- lease, like ack.lua.
-- KEYS: task, leases, inflight, flow, flow done, wake, delayed, cascade, deadlines, queue,
--       dlq, events, tag-inflight
-- ARGV: worker id, token, task id, error, ttl ms, mode, poison threshold, queue name,
--       started ms, events cap, task events, summary
-- (summary: the error in one line, for the event.)
-- Returns 2 (retry scheduled or re-queued), 3 (quarantined), 1 (failed), 4 (skipped),
-- 0 (lease moved on).
local id, token, ttl, mode = ARGV[3], ARGV[2], tonumber(ARGV[5]), ARGV[6]
events_to(KEYS[12], ARGV[10], ARGV[11])
if not unlease(KEYS[2], id, token) then
  -- A replay of a call that was applied answers as that call did; anything else is late.
  local settled = redis.call('HGET', KEYS[1], 'settled') or ''
  local prefix = token .. '|'
  if string.sub(settled, 1, #prefix) == prefix then
    return tonumber(string.sub(settled, #prefix + 1))
  end
  return 0
end
local KIND = {[1] = 'task.failed', [2] = 'task.retried', [3] = 'task.quarantined',
  [4] = 'task.skipped'}
local function told(code)
  emit_task(KIND[code], KEYS[1], id, ARGV[1], ARGV[12], ARGV[9], now_ms())
end
local function settle(code, already_told)
  redis.call('HSET', KEYS[1], 'settled', token .. '|' .. code)
  if not already_told then told(code) end
  return code
end
redis.call('ZREM', KEYS[9], id .. '|' .. ARGV[1] .. '|' .. token)
if counted(token) then lease_count(KEYS[3], ARGV[8], -1) end
untag(KEYS[1], KEYS[13], token)
-- The slot is free ('settled': nothing queued yet; a task put back says so below).
signal(KEYS[6], SIGNAL.settled, ARGV[1], redis.call('SCARD', KEYS[2]))
redis.call('HSET', KEYS[1], 'started', ARGV[9], 'error', ARGV[4], 'worker', ARGV[1],
  'lease', token)
if mode == 'quarantine' then
  -- The worker refused to run it (a spec whose signature does not verify): no run can
  -- succeed until an operator looks at it.
  quarantine(KEYS[1], KEYS[11], id, ARGV[4])
  return settle(3)
end
if mode == 'crash' then
  if redis.call('HINCRBY', KEYS[1], 'lost', 1) >= tonumber(ARGV[7]) then
    quarantine(KEYS[1], KEYS[11], id, ARGV[4])
    return settle(3)
  end
  requeue(KEYS[1], KEYS[10], id, KEYS[7], KEYS[6])
  signal(KEYS[6], SIGNAL.submitted, ARGV[8])
  return settle(2)
end
if mode == 'skip' then
  redis.call('HSET', KEYS[1], 'state', 'skipped', 'result', '\192', 'finished', now_ms())
  redis.call('PEXPIRE', KEYS[1], ttl)
  if tonumber(redis.call('HGET', KEYS[1], 'nchildren') or '0') > 0 then
    redis.call('RPUSH', KEYS[8], id)
    signal(KEYS[6], SIGNAL.cascade)
  end
  flow_tasks_done(KEYS[4], KEYS[5], 1, 0, ttl)
  return settle(4)
end
-- The wait before retry n (its n-th failure's): the record's retry_delay is a number, the
-- first wait, each next one twice the last (a RETRY signal's always the first); or a list
-- of waits, each followed by a comma ("1,10,100,"), the n-th for retry n and the last for
-- any past them, as given. A field that is not a number waits none.
local function retry_wait(given, n, doubling)
  if string.find(given, ',', 1, true) then
    local waits = {}
    for wait in string.gmatch(given, '([^,]*),') do waits[#waits + 1] = tonumber(wait) or 0 end
    return waits[math.min(n, #waits)]
  end
  return (tonumber(given) or 0) * (doubling and 2 ^ (n - 1) or 1)
end
local f = redis.call('HMGET', KEYS[1], 'failures', 'retries', 'retry_delay')
local failures = tonumber(f[1] or '0') + 1
redis.call('HSET', KEYS[1], 'failures', failures)
if mode == 'again' or (mode == 'retry' and failures <= tonumber(f[2] or '0')) then
  local wait = retry_wait(f[3] or '0', failures, mode == 'retry')
  local due = now_ms() + math.floor(wait * 1000)
  redis.call('HSET', KEYS[1], 'state', 'retrying')
  redis.call('ZADD', KEYS[7], due, id)
  signal(KEYS[6], SIGNAL.retry)
  return settle(2)
end
told(1)  -- before the flow's own event, which failing it for good may write
fail_for_good(KEYS[1], id, ARGV[4], KEYS[4], KEYS[5], KEYS[8], KEYS[6], ttl)
return settle(1, true)
