-- A task raised (or timed out). Retry it later with exponential backoff while it has
-- retries left; otherwise fail it and let the dispatcher fail its dependents.
-- KEYS: task, leases, inflight, flow, flow done, wake, delayed, cascade
-- ARGV: worker id, attempt, task id, error, ttl ms, retryable (1/0)
-- Returns 2 (retry scheduled), 1 (failed), or 0 (lease no longer holds).
if not holds(KEYS[1], 'running', ARGV[1], ARGV[2]) then return 0 end
local ttl = tonumber(ARGV[5])
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'failures', 'retries', 'retry_delay', 'nchildren', 'queue')
local failures = tonumber(f[1] or '0') + 1
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[3], f[5], -1)
redis.call('RPUSH', KEYS[6], 'a|' .. ARGV[1])
if ARGV[6] == '1' and failures <= tonumber(f[2] or '0') then
  local due = now + math.floor(tonumber(f[3] or '0') * 1000 * 2 ^ (failures - 1))
  redis.call('HSET', KEYS[1], 'state', 'retrying', 'failures', failures, 'error', ARGV[4])
  redis.call('ZADD', KEYS[7], due, ARGV[3])
  return 2
end
redis.call('HSET', KEYS[1], 'state', 'failed', 'failures', failures, 'error', ARGV[4],
  'finished', now)
redis.call('PEXPIRE', KEYS[1], ttl)
if tonumber(f[4] or '0') > 0 then
  redis.call('RPUSH', KEYS[8], ARGV[3])
  redis.call('RPUSH', KEYS[6], 'c')
end
flow_task_done(KEYS[4], KEYS[5], true, ttl)
return 1
