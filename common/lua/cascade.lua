-- Fail the pending dependents of one failed task, and queue theirs in turn.
-- Idempotent: run again after a crash, it changes nothing already changed.
-- KEYS: cascade, flow, flow done, events; then child task...
-- ARGV: failed task id, ttl ms, error, events cap; then child id...
-- Returns how many dependents it failed.
local ttl = tonumber(ARGV[2])
events_to(KEYS[4], ARGV[4], '0')
local n = 0
for i = 5, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'pending' then
    redis.call('HSET', KEYS[i], 'state', 'upstream_failed', 'error', ARGV[3],
      'finished', now_ms(), 'deps', NEVER)
    redis.call('PEXPIRE', KEYS[i], ttl)
    flow_tasks_done(KEYS[2], KEYS[3], 1, 1, ttl)
    if tonumber(redis.call('HGET', KEYS[i], 'nchildren') or '0') > 0 then
      redis.call('RPUSH', KEYS[1], ARGV[i])
    end
    n = n + 1
  end
end
redis.call('LREM', KEYS[1], 0, ARGV[1])
return n
