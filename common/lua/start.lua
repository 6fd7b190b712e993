-- A worker starts a task it popped from its inbox, if its lease still holds.
-- KEYS: task    ARGV: worker id, attempt
-- Returns the spec fields {fn, args, timeout, queue, flow, children, name}, or nil if stale.
if not holds(KEYS[1], 'assigned', ARGV[1], ARGV[2]) then return false end
redis.call('HSET', KEYS[1], 'state', 'running', 'started', now_ms())
return redis.call('HMGET', KEYS[1], 'fn', 'args', 'timeout', 'queue', 'flow', 'children', 'name')
