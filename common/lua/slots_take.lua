-- Take slots of concurrency limits (balancer/concurrency.py: Prefect's `concurrency` and
-- `rate_limit`), all of them or none: `occupy` slots of each limit, for the holder.
-- A block's slots (rate 0) are leased until the lease ms from now (the holder renews the
-- lease while it holds them; one that dies frees its slots when its lease runs out).
-- rate_limit's slots (rate 1) are never given back: they decay, at the limit's decay per
-- second, one after another, oldest first (a leaky bucket): each one taken ends where the
-- ones before it end, plus occupy / decay seconds. A limit without decay cannot be taken
-- so. The caller passes only the names that have a limit, with the limit it read (the
-- limits hash stays out of KEYS: a script's keys need write access, which the worker's
-- and the client's users have not there).
-- A limit's slots: the holders as "holder|occupy" members (rate_limit's "~holder|occupy"),
-- scored by when their lease ends (or when they have decayed); ended ones are dropped as
-- they are met here.
-- KEYS: none; then concurrency... (one per limited name)
-- ARGV: holder, occupy, lease ms, rate; then (name, limit, decay per second) per key
-- Returns {1, names taken}, {0, the first name without room now, ms until the first of
-- its rate_limit's slots has decayed (-1: it holds none)}, {-1, a name whose limit is
-- below occupy (it can never be taken)}, or {-2, a name without decay (rate 1 only)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local holder, occupy, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local rate = ARGV[4] == '1'
local decayed = {}  -- per key, when rate_limit's slots held now have all decayed
for i, key in ipairs(KEYS) do
  local name, limit, decay = ARGV[2 + 3 * i], tonumber(ARGV[3 + 3 * i]), tonumber(ARGV[4 + 3 * i])
  if occupy > limit then return {-1, name} end
  if rate and not (decay > 0) then return {-2, name} end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local held, first, last = 0, nil, now
  local members = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')  -- by when they end
  for j = 1, #members, 2 do
    local member = members[j]
    held = held + (tonumber(string.match(member, '|(%d+)$')) or 1)
    if string.sub(member, 1, 1) == '~' then
      local ends = tonumber(members[j + 1])
      first = first or ends
      last = math.max(last, ends)
    end
  end
  if held + occupy > limit then return {0, name, first and (first - now) or -1} end
  decayed[i] = last
end
local member = holder .. '|' .. string.format('%d', occupy)
for i, key in ipairs(KEYS) do
  if rate then
    local ends = math.ceil(decayed[i] + occupy * 1000 / tonumber(ARGV[4 + 3 * i]))
    redis.call('ZADD', key, string.format('%d', ends), '~' .. member)
  else
    redis.call('ZADD', key, now + lease, member)
  end
end
return {1, #KEYS}
