-- Lease ready tasks of one queue to one worker, up to its free slots.
-- KEYS: leader, worker, inbox, leases, inflight, queue, task...
-- ARGV: leader token, worker id, queue name, capacity, task id... (same order as task keys)
-- Returns {assigned, leased after, dropped}; {-1, 0, 0} when the caller is not the leader,
-- {-2, 0, 0} when the worker is gone. An id whose task record is missing is dropped from
-- the queue (nothing could run it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0, 0} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {-2, 0, 0} end
local free = tonumber(ARGV[4]) - redis.call('SCARD', KEYS[4])
local n, dropped = 0, 0
for i = 7, #KEYS do
  if n >= free then break end
  local id = ARGV[i - 2]
  if redis.call('ZREM', KEYS[6], id) == 1 then
    if redis.call('HEXISTS', KEYS[i], 'fn') == 0 then
      dropped = dropped + 1
    else
      local attempt = redis.call('HINCRBY', KEYS[i], 'attempt', 1)
      redis.call('HSET', KEYS[i], 'state', 'assigned', 'worker', ARGV[2])
      redis.call('SADD', KEYS[4], id)
      redis.call('RPUSH', KEYS[3], id .. '|' .. attempt)
      n = n + 1
    end
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[5], ARGV[3], n) end
return {n, redis.call('SCARD', KEYS[4]), dropped}
