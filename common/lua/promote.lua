-- Move delayed tasks whose time has come into their queues: retries past their delay,
-- and the first tasks of a flow submitted to start later (a gated one goes to the gate,
-- where the dispatcher decides it, as it would have at submit).
-- KEYS: delayed, gate; then (task, queue)...
-- ARGV: none; then task id...
-- Returns how many it moved.
local now = now_ms()
local n = 0
for j = 0, (#KEYS - 2) / 2 - 1 do
  local task, queue, id = KEYS[3 + 2 * j], KEYS[4 + 2 * j], ARGV[1 + j]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= now then
    -- The write Redis may refuse (a key of another type) goes first: refused, it leaves
    -- the task as it was, in the delayed set, for the caller to set aside.
    local s = redis.call('HMGET', task, 'state', 'gate', 'score')
    if s[1] == 'scheduled' and s[2] == '1' then
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('HSET', task, 'state', 'pending', 'ready', now)
      n = n + 1
    elseif s[1] == 'retrying' or s[1] == 'scheduled' then
      redis.call('ZADD', queue, s[3], id)
      redis.call('HSET', task, 'state', 'queued', 'ready', now)
      n = n + 1
    end
    redis.call('ZREM', KEYS[1], id)
  end
end
return n
