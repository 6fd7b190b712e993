-- Acknowledge a finished task: store its result, free the slot, unlock dependents.
-- A dependent whose last upstream this was is queued here, so it is queued exactly once.
-- KEYS: task, leases, inflight, flow, flow done, wake, then (child task, child queue)...
-- ARGV: worker id, attempt, task id, result, ttl ms, child id...
-- Returns 1, or 0 when the lease no longer holds (the ack is refused).
if not holds(KEYS[1], 'running', ARGV[1], ARGV[2]) then return 0 end
local ttl = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'completed', 'result', ARGV[4], 'finished', now_ms())
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[3], redis.call('HGET', KEYS[1], 'queue'), -1)
for j = 0, (#KEYS - 6) / 2 - 1 do
  local child, queue = KEYS[7 + 2 * j], KEYS[8 + 2 * j]
  if redis.call('HINCRBY', child, 'deps', -1) <= 0
      and redis.call('HGET', child, 'state') == 'pending' then
    redis.call('HSET', child, 'state', 'queued')
    redis.call('ZADD', queue, redis.call('HGET', child, 'score'), ARGV[6 + j])
  end
end
flow_task_done(KEYS[4], KEYS[5], false, ttl)
redis.call('RPUSH', KEYS[6], 'a|' .. ARGV[1])
return 1
