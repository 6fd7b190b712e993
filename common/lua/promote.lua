-- Move retrying tasks whose delay has passed back into their queues.
-- KEYS: delayed; then (task, queue)...
-- ARGV: none; then task id...
-- Returns how many it queued.
local now = now_ms()
local n = 0
for j = 0, (#KEYS - 1) / 2 - 1 do
  local task, queue, id = KEYS[2 + 2 * j], KEYS[3 + 2 * j], ARGV[1 + j]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= now then
    redis.call('ZREM', KEYS[1], id)
    if redis.call('HGET', task, 'state') == 'retrying' then
      redis.call('HSET', task, 'state', 'queued', 'ready', now)
      redis.call('ZADD', queue, redis.call('HGET', task, 'score'), id)
      n = n + 1
    end
  end
end
return n
