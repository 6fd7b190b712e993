-- Give up a quarantined task: it fails for good, and so do its dependents.
-- KEYS: dlq, task, flow, flow done, cascade, wake, events
-- ARGV: task id, ttl ms, events cap
-- Returns 1, or 0 if the task is not quarantined.
if redis.call('HGET', KEYS[2], 'state') ~= 'dead' then return 0 end
events_to(KEYS[7], ARGV[3], '0')
redis.call('ZREM', KEYS[1], ARGV[1])
fail_for_good(KEYS[2], ARGV[1], redis.call('HGET', KEYS[2], 'error') or '', KEYS[3], KEYS[4],
  KEYS[5], KEYS[6], tonumber(ARGV[2]))
return 1
