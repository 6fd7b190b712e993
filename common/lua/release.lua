-- A stopping worker hands back the tasks still in its inbox, at their original place.
-- KEYS: inbox, leases, inflight, wake, then (task, queue)...
-- ARGV: worker id, then (inbox entry, task id)...
-- Returns how many it handed back.
local n = 0
for j = 0, (#KEYS - 4) / 2 - 1 do
  local task, queue = KEYS[5 + 2 * j], KEYS[6 + 2 * j]
  local entry, id = ARGV[2 + 2 * j], ARGV[3 + 2 * j]
  if redis.call('LREM', KEYS[1], 1, entry) == 1 then
    local s = redis.call('HMGET', task, 'state', 'worker', 'queue')
    if s[1] == 'assigned' and s[2] == ARGV[1] then
      redis.call('HSET', task, 'state', 'queued')
      redis.call('HDEL', task, 'worker')
      redis.call('ZADD', queue, redis.call('HGET', task, 'score'), id)
      redis.call('SREM', KEYS[2], id)
      redis.call('HINCRBY', KEYS[3], s[3], -1)
      n = n + 1
    end
  end
end
if n > 0 then redis.call('RPUSH', KEYS[4], 's') end
return n
