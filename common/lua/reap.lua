-- Take back every task of a dead (or departed) worker. Tasks it only held go back to
-- their queue at their original place; a task that was running when its worker died
-- counts a loss, and past the poison threshold it is quarantined instead.
-- KEYS: leader, worker, workers, inbox, leases, inflight, dlq, cascade, then
--       (task, queue, flow, flow done)...
-- ARGV: leader token, worker id, seen before ms (0: reap regardless), poison threshold,
--       ttl ms, quarantine error, task id...
-- Returns {requeued, quarantined}, or {-1, 0} if not leader, {-2, 0} if the worker is alive.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local seen = redis.call('ZSCORE', KEYS[3], ARGV[2])
if ARGV[3] ~= '0' and seen and tonumber(seen) >= tonumber(ARGV[3]) then return {-2, 0} end
local requeued, dead = 0, 0
for j = 0, (#KEYS - 8) / 4 - 1 do
  local task, queue = KEYS[9 + 4 * j], KEYS[10 + 4 * j]
  local id = ARGV[7 + j]
  local s = redis.call('HMGET', task, 'state', 'worker', 'queue')
  if (s[1] == 'assigned' or s[1] == 'running') and s[2] == ARGV[2] then
    redis.call('HINCRBY', KEYS[6], s[3], -1)
    local lost = 0
    if s[1] == 'running' then lost = redis.call('HINCRBY', task, 'lost', 1) end
    if lost >= tonumber(ARGV[4]) then
      redis.call('HSET', task, 'state', 'dead', 'error', ARGV[6], 'finished', now_ms())
      redis.call('HDEL', task, 'worker')
      redis.call('ZADD', KEYS[7], now_ms(), id)
      if tonumber(redis.call('HGET', task, 'nchildren') or '0') > 0 then
        redis.call('RPUSH', KEYS[8], id)
      end
      flow_task_done(KEYS[11 + 4 * j], KEYS[12 + 4 * j], true, tonumber(ARGV[5]))
      dead = dead + 1
    else
      redis.call('HSET', task, 'state', 'queued')
      redis.call('HDEL', task, 'worker')
      redis.call('ZADD', queue, redis.call('HGET', task, 'score'), id)
      requeued = requeued + 1
    end
  end
end
redis.call('DEL', KEYS[2], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[3], ARGV[2])
return {requeued, dead}
