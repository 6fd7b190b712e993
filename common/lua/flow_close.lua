-- A @flow function returned or raised: its run is no longer open. It gives back the one
-- count it held in `remaining`; when nothing else remains (the client waits for its tasks
-- first) the run settles in the function's outcome, as Prefect 3 decides a flow's state
-- (a task that failed does not fail a function that went on). Else the run settles when
-- its last task does, failed if anything failed.
-- KEYS: flow, flow done, flow tasks
-- ARGV: state, ttl ms, error
-- (state: 'completed' or 'failed'; error: the packed error record of the function, or ''.)
-- Returns 1 (settled now), 2 (settles with its last task), 0 (not open).
if redis.call('HGET', KEYS[1], 'open') ~= '1' then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'open', '0')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
redis.call('PEXPIRE', KEYS[3], ttl)
if ARGV[1] == 'failed' then redis.call('HINCRBY', KEYS[1], 'failed', 1) end
if redis.call('HINCRBY', KEYS[1], 'remaining', -1) > 0 then return 2 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished', now_ms())
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
