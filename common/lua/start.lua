-- A worker starts a task it popped from its inbox, if its lease still holds. Calling it
-- again for the same lease (a reply lost to a dropped connection) returns the spec again.
-- Tasks with a timeout get a deadline, after which the dispatcher fails them even if
-- their worker stays silent.
-- KEYS: task, deadlines    ARGV: worker id, attempt, grace ms
-- Returns the spec fields {fn, args, timeout, queue, flow, children, name}, or nil if stale.
local s = lease_of(KEYS[1])
if not held(s, ARGV[1], ARGV[2]) or (s[1] ~= 'assigned' and s[1] ~= 'running') then
  return false
end
if s[1] == 'assigned' then
  local now = now_ms()
  redis.call('HSET', KEYS[1], 'state', 'running', 'started', now)
  local timeout = tonumber(redis.call('HGET', KEYS[1], 'timeout') or '')
  if timeout then
    redis.call('ZADD', KEYS[2], now + math.floor(timeout * 1000) + tonumber(ARGV[3]),
      redis.call('HGET', KEYS[1], 'id'))
  end
end
return redis.call('HMGET', KEYS[1], 'fn', 'args', 'timeout', 'queue', 'flow', 'children', 'name')
