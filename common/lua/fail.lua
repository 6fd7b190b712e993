-- A run of a task did not succeed. Mode "retry": retry later with exponential backoff
-- while retries are left, else fail. Mode "final": fail now. Mode "crash": the run killed
-- its process; put the task back at once, or quarantine it once it has killed
-- `poison threshold` processes.
-- KEYS: task, leases, inflight, flow, flow done, wake, delayed, cascade, deadlines, queue, dlq
-- ARGV: worker id, attempt, task id, error, ttl ms, mode, poison threshold
-- Returns 2 (retry scheduled or re-queued), 3 (quarantined), 1 (failed), 0 (lease moved on).
local s = lease_of(KEYS[1])
if not held(s, ARGV[1], ARGV[2]) then return 0 end
if s[1] == 'retrying' then return 2 end
if s[1] == 'failed' then return 1 end
if s[1] ~= 'running' then return 0 end
local id, ttl, mode = ARGV[3], tonumber(ARGV[5]), ARGV[6]
redis.call('ZREM', KEYS[9], id)
unlease(KEYS[2], KEYS[3], id, s[4])
redis.call('RPUSH', KEYS[6], 'a|' .. ARGV[1])
if mode == 'crash' then
  if redis.call('HINCRBY', KEYS[1], 'lost', 1) >= tonumber(ARGV[7]) then
    quarantine(KEYS[1], KEYS[11], id, ARGV[4])
    return 3
  end
  redis.call('HSET', KEYS[1], 'error', ARGV[4])
  requeue(KEYS[1], KEYS[10], id)
  return 2
end
local f = redis.call('HMGET', KEYS[1], 'failures', 'retries', 'retry_delay')
local failures = tonumber(f[1] or '0') + 1
redis.call('HSET', KEYS[1], 'failures', failures)
if mode == 'retry' and failures <= tonumber(f[2] or '0') then
  local due = now_ms() + math.floor(tonumber(f[3] or '0') * 1000 * 2 ^ (failures - 1))
  redis.call('HSET', KEYS[1], 'state', 'retrying', 'error', ARGV[4])
  redis.call('ZADD', KEYS[7], due, id)
  return 2
end
fail_for_good(KEYS[1], id, ARGV[4], KEYS[4], KEYS[5], KEYS[8], KEYS[6], ttl)
return 1
