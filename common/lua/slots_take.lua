-- Take slots of concurrency limits (balancer/concurrency.py: Prefect's `concurrency`), all
-- of them or none: `occupy` slots of each limit, for the holder, until the lease ms from
-- now (the holder renews it while it holds them; one that dies frees its slots when its
-- lease runs out). The caller passes only the names that have a limit, with the limit it
-- read (the limits hash stays out of KEYS: a script's keys need write access, which the
-- worker's and the client's users have not there).
-- A limit's slots: the holders as "holder|occupy" members, scored by when their lease
-- ends; ended leases are dropped as they are met here.
-- KEYS: none; then concurrency... (one per limited name)
-- ARGV: holder, occupy, lease ms; then (name, limit) per key
-- Returns {1, names taken}, {0, the first name without room now}, or {-1, a name whose
-- limit is below occupy (it can never be taken)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder, occupy, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  local name, limit = ARGV[2 + 2 * i], tonumber(ARGV[3 + 2 * i])
  if occupy > limit then return {-1, name} end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held = 0
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    held = held + (tonumber(string.match(member, '|(%d+)$')) or 1)
  end
  if held + occupy > limit then return {0, name} end
end
local member = holder .. '|' .. string.format('%d', occupy)
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, member)
end
return {1, #KEYS}
