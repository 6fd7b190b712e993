-- Acknowledge a finished task: store its result, free the slot, unlock dependents.
-- A dependent whose last upstream this was is queued here, so it is queued exactly once.
-- KEYS: task, leases, inflight, flow, flow done, wake, deadlines,
--       then (child task, child queue)...
-- ARGV: worker id, attempt, task id, result, ttl ms, child id...
-- Returns 1 (stored, or stored already by this same lease), or 0 when the lease moved on.
local s = lease_of(KEYS[1])
if not held(s, ARGV[1], ARGV[2]) then return 0 end
if s[1] == 'completed' then return 1 end
if s[1] ~= 'running' then return 0 end
local ttl = tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'state', 'completed', 'result', ARGV[4], 'finished', now_ms())
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZREM', KEYS[7], ARGV[3])
unlease(KEYS[2], KEYS[3], ARGV[3], s[4])
for j = 0, (#KEYS - 7) / 2 - 1 do
  local child, queue = KEYS[8 + 2 * j], KEYS[9 + 2 * j]
  if redis.call('HINCRBY', child, 'deps', -1) <= 0
      and redis.call('HGET', child, 'state') == 'pending' then
    redis.call('HSET', child, 'state', 'queued')
    redis.call('ZADD', queue, redis.call('HGET', child, 'score') or 0, ARGV[6 + j])
  end
end
flow_task_done(KEYS[4], KEYS[5], false, ttl)
redis.call('RPUSH', KEYS[6], 'a|' .. ARGV[1])
return 1
