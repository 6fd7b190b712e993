-- Take the leader lease if it is free, or renew it if we hold it.
-- KEYS: leader, epoch    ARGV: dispatcher id, ttl ms
-- Returns the token "epoch|id" we hold, or nil when another dispatcher leads.
local current = redis.call('GET', KEYS[1])
if not current then
  local epoch = redis.call('INCR', KEYS[2])
  local token = epoch .. '|' .. ARGV[1]
  redis.call('SET', KEYS[1], token, 'PX', tonumber(ARGV[2]))
  return token
end
local sep = string.find(current, '|', 1, true)
if sep and string.sub(current, sep + 1) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return current
end
return false
