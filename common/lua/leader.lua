-- Take the leader lease if it is free, or renew it if we hold it.
-- A new lease writes leader.changed to the events stream. Every call dates the caller in
-- dispatchers (leader and standbys alike, for `status` and the dashboard), where those
-- silent for 10 ttls are dropped. Only that list is lost when the dispatchers key is of
-- another type (written by hand): leading must not depend on it, so it is dated by pcall.
-- KEYS: leader, epoch, events, dispatchers
-- ARGV: dispatcher id, ttl ms, events cap
-- Returns {the token "epoch|id" we hold, what the epoch key held when it was no counter
-- (else false)}, or nil when another dispatcher leads.
-- An epoch key that is no counter (not an integer, or not a string) would keep every
-- dispatcher from leading: a new epoch is taken from the clock instead, in ms, which is
-- above any count of leaders, so no lease token of an earlier epoch can come back.
local seen = now_ms()
if type(redis.pcall('ZADD', KEYS[4], seen, ARGV[1])) == 'number' then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', seen - 10 * tonumber(ARGV[2]))
end
local current = redis.call('GET', KEYS[1])
if not current then
  local epoch, was = redis.pcall('INCR', KEYS[2]), false
  if type(epoch) == 'table' then
    was = redis.pcall('GET', KEYS[2])
    if type(was) ~= 'string' then was = 'a ' .. redis.call('TYPE', KEYS[2])['ok'] end
    epoch = now_ms()
    redis.call('SET', KEYS[2], epoch)
  end
  local token = epoch .. '|' .. ARGV[1]
  redis.call('SET', KEYS[1], token, 'PX', tonumber(ARGV[2]))
  events_to(KEYS[3], ARGV[3], '0')
  emit('leader.changed', 'w', ARGV[1], 'd', epoch)
  return {token, was}
end
local sep = string.find(current, '|', 1, true)
if sep and string.sub(current, sep + 1) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return {current, false}
end
return false
