-- Put a quarantined task back into its queue, its loss count reset.
-- KEYS: dlq, task, queue, wake, delayed
-- ARGV: task id
-- Returns 1, or 0 if the task is not quarantined.
if redis.call('HGET', KEYS[2], 'state') ~= 'dead' then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'lost', 0)
requeue(KEYS[2], KEYS[3], ARGV[1], KEYS[5], KEYS[4], now_ms())
signal(KEYS[4], SIGNAL.submitted)
return 1
