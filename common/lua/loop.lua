-- Record how far a looping task run got (Prefect 1's LOOP: worker/loopstate.py), where the
-- worker still holds its lease and the record is there, so that its retry, or its run
-- after a crash, goes on from the last iteration; and push the lease's deadline out by
-- its timeout plus grace, since a task's timeout bounds each iteration of its loop (the
-- dispatcher would otherwise fail a loop that outlived one timeout, while it runs).
-- KEYS: leases, task, deadlines
-- ARGV: task id, token, worker id, loop, deadline ms
-- (loop: the progress, packed as worker/looping.py writes it; deadline ms: from now to the
-- lease's new deadline, 0 when the task has no timeout.)
-- Returns 1 when it was written, else 0.
if redis.call('SISMEMBER', KEYS[1], ARGV[1] .. '|' .. ARGV[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'loop', ARGV[4])
local extend = tonumber(ARGV[5]) or 0
if extend > 0 then
  redis.call('ZADD', KEYS[3], 'XX', 'GT', now_ms() + extend,
    ARGV[1] .. '|' .. ARGV[3] .. '|' .. ARGV[2])
end
return 1
