-- Lease ready tasks of one queue to one worker, up to `capacity` leases in all.
-- Each lease carries the whole task spec into the worker's inbox, so the worker needs no
-- further read to run it.
-- KEYS: leader, inbox, leases, inflight, queue, deadlines, task...
-- ARGV: leader token, worker id, queue name, capacity, grace ms, lease token prefix,
--       task id... (same order as the task keys)
-- Returns {assigned, leased after, dropped}; {-1, 0, 0} when the caller is not the leader.
-- An id without a task record is dropped from the queue (nothing could run it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0, 0} end
local held = redis.call('SCARD', KEYS[3])
local want = math.min(tonumber(ARGV[4]) - held, #KEYS - 6)
if want <= 0 then return {0, held, 0} end
local ids = {}
for i = 1, want do ids[i] = ARGV[6 + i] end
local scores = redis.call('ZMSCORE', KEYS[5], unpack(ids))
local present = {}
for i = 1, want do
  if scores[i] then present[#present + 1] = i end
end
if #present == 0 then return {0, held, 0} end
local removing = {}
for j, i in ipairs(present) do removing[j] = ids[i] end
redis.call('ZREM', KEYS[5], unpack(removing))

local function field(v)
  v = v or ''
  return #v .. ':' .. v
end

local entries, members, deadlines = {}, {}, {}
local n, dropped = 0, 0
for _, i in ipairs(present) do
  local id, key = ids[i], KEYS[6 + i]
  local s = redis.call('HMGET', key, 'fn', 'args', 'timeout', 'flow', 'children', 'name')
  if not s[1] then
    dropped = dropped + 1
  else
    n = n + 1
    local token = ARGV[6] .. '.' .. n
    redis.call('HSET', key, 'state', 'assigned', 'worker', ARGV[2], 'lease', token)
    entries[n] = id .. '|' .. token .. '|' .. field(ARGV[3]) .. field(s[4]) .. field(s[3])
      .. field(s[1]) .. field(s[6]) .. field(s[5]) .. field(s[2])
    members[n] = id .. '|' .. token
    local timeout = tonumber(s[3] or '')
    if timeout then
      deadlines[#deadlines + 1] = math.floor(timeout * 1000) + tonumber(ARGV[5])
      deadlines[#deadlines + 1] = id
    end
  end
end
if n > 0 then
  redis.call('RPUSH', KEYS[2], unpack(entries))
  redis.call('SADD', KEYS[3], unpack(members))
  redis.call('HINCRBY', KEYS[4], ARGV[3], n)
  if #deadlines > 0 then
    local now = now_ms()
    for d = 1, #deadlines, 2 do deadlines[d] = deadlines[d] + now end
    redis.call('ZADD', KEYS[6], unpack(deadlines))
  end
end
return {n, held + n, dropped}
