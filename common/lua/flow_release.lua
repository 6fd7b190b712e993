-- A task of an open flow run that waited for upstream tasks (flow_extend.lua wrote it
-- pending): the client saw them settle. With no error, queue it; with one (an upstream
-- failed), it ends upstream_failed without running and settles in its run.
-- KEYS: task, queue, queues, wake, flow, flow done, delayed
-- ARGV: task id, queue name, score, ttl ms, error, signal
-- (error: '' to queue the task, else the packed error record.)
-- Returns 1 (queued), 2 (failed), 0 (not pending: released already).
if redis.call('HGET', KEYS[1], 'state') ~= 'pending' then return 0 end
if ARGV[5] == '' then
  if tonumber(redis.call('HGET', KEYS[1], 'deps') or '0') <= 0 then return 0 end
  redis.call('HSET', KEYS[1], 'deps', 0)
  enqueue(KEYS[2], ARGV[3], ARGV[1], KEYS[7], KEYS[4])
  redis.call('SADD', KEYS[3], ARGV[2])
  signal_capped(KEYS[4], ARGV[6])
  return 1
end
local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'state', 'upstream_failed', 'error', ARGV[5], 'finished', now_ms(),
  'deps', NEVER)
redis.call('PEXPIRE', KEYS[1], ttl)
flow_tasks_done(KEYS[5], KEYS[6], 1, 1, ttl, nil, KEYS[1])
return 2
