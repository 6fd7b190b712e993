-- Move a bad entry out of the key it was found in and record it as set aside, in one step:
-- it is never both gone and unrecorded (common/aside.py says what a record holds).
-- KEYS: aside, source
-- ARGV: entry id, record, source type, member
-- (source type: 'zset', 'set' or 'list'.)
-- Returns 1, or 0 (nothing recorded) when the member was no longer there.
local how, member = ARGV[3], ARGV[4]
local removed = 0
if how == 'zset' then
  removed = redis.call('ZREM', KEYS[2], member)
elseif how == 'set' then
  removed = redis.call('SREM', KEYS[2], member)
elseif how == 'list' then
  removed = redis.call('LREM', KEYS[2], 0, member)
end
if removed == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
