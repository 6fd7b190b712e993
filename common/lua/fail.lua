-- A run of a task did not succeed. Mode "retry": retry later with exponential backoff
-- while retries are left, else fail. Mode "final": fail now. Mode "crash": the run killed
-- its process; put the task back at once, or quarantine it once it has killed
-- `poison threshold` processes. Mode "quarantine": quarantine it now. Idempotent for the
-- same lease, like ack.lua.
-- KEYS: task, leases, inflight, flow, flow done, wake, delayed, cascade, deadlines, queue,
--       dlq, events
-- ARGV: worker id, token, task id, error, ttl ms, mode, poison threshold, queue name,
--       started ms, events cap, task events, summary
-- (summary: the error in one line, for the event.)
-- Returns 2 (retry scheduled or re-queued), 3 (quarantined), 1 (failed), 0 (lease moved on).
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
local KIND = {[1] = 'task.failed', [2] = 'task.retried', [3] = 'task.quarantined'}
local function told(code)
  emit_task(KIND[code], KEYS[1], id, ARGV[1], ARGV[12], ARGV[9], now_ms())
end
local function settle(code, already_told)
  redis.call('HSET', KEYS[1], 'settled', token .. '|' .. code)
  if not already_told then told(code) end
  return code
end
redis.call('ZREM', KEYS[9], id .. '|' .. ARGV[1] .. '|' .. token)
if counted(token) then redis.call('HINCRBY', KEYS[3], ARGV[8], -1) end
signal(KEYS[6], SIGNAL.ack, ARGV[1], redis.call('SCARD', KEYS[2]))
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
  requeue(KEYS[1], KEYS[10], id)
  return settle(2)
end
local f = redis.call('HMGET', KEYS[1], 'failures', 'retries', 'retry_delay')
local failures = tonumber(f[1] or '0') + 1
redis.call('HSET', KEYS[1], 'failures', failures)
if mode == 'retry' and failures <= tonumber(f[2] or '0') then
  local due = now_ms() + math.floor(tonumber(f[3] or '0') * 1000 * 2 ^ (failures - 1))
  redis.call('HSET', KEYS[1], 'state', 'retrying')
  redis.call('ZADD', KEYS[7], due, id)
  signal(KEYS[6], SIGNAL.retry)
  return settle(2)
end
told(1)  -- before the flow's own event, which failing it for good may write
fail_for_good(KEYS[1], id, ARGV[4], KEYS[4], KEYS[5], KEYS[8], KEYS[6], ttl)
return settle(1, true)
