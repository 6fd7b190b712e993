-- Record a task run's own name (its task's task_run_name, made on the worker as the run
-- begins: balancer/runnames.py), where the worker still holds its lease and the record
-- is there: a run whose lease moved on, or whose record is gone (deleted by hand), writes
-- nothing (a plain HSET would make a record again, with no expiry).
-- KEYS: leases, task
-- ARGV: task id, token, name
-- Returns 1 when it was written, else 0.
if redis.call('SISMEMBER', KEYS[1], ARGV[1] .. '|' .. ARGV[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'run_name', ARGV[3])
return 1
