-- Lease ready tasks of one queue to one worker, up to `capacity` leases in all.
-- Each lease carries the whole task spec into the worker's inbox, so the worker needs no
-- further read to run it. The task record is not written: the lease member "id|token" in
-- the worker's leases set is the lease (its state reads "queued" until it is marked
-- running or settled, and its absence from the queue tells it is leased).
-- KEYS: leader, inbox, leases, inflight, queue, deadlines, task...
-- A deadline member is "id|worker|token": the dispatcher fails that lease when it is due.
-- ARGV: leader token, worker id, queue name, capacity, grace ms, lease token prefix (with
--       a "u" when the queue has no concurrency limit: not counted in inflight),
--       task id... (same order as the task keys)
-- Returns {assigned, leased after, dropped, deadlines set}; {-1, 0, 0, 0} when the caller
-- is not the leader.
-- An id without a task record is dropped from the queue (nothing could run it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0, 0, 0} end
local held = redis.call('SCARD', KEYS[3])
local free = tonumber(ARGV[4]) - held
if free <= 0 or #KEYS == 6 then return {0, held, 0, 0} end
local ids = {}
for i = 7, #KEYS do ids[i - 6] = ARGV[i] end
local scores = redis.call('ZMSCORE', KEYS[5], unpack(ids))

local function field(v)
  v = v or ''
  return #v .. ':' .. v
end

-- Take queued ids in order until the free slots are filled; ids without a task record
-- leave the queue too, without taking a slot.
local removing, entries, members, deadlines = {}, {}, {}, {}
local n, dropped = 0, 0
for i = 1, #ids do
  if n >= free then break end
  if scores[i] then
    local id = ids[i]
    removing[#removing + 1] = id
    local s = redis.call('HMGET', KEYS[6 + i], 'fn', 'args', 'timeout', 'flow', 'children', 'name')
    if not s[1] then
      dropped = dropped + 1
    else
      n = n + 1
      local token = ARGV[6] .. '.' .. n
      entries[n] = id .. '|' .. token .. '|' .. field(ARGV[3]) .. field(s[4]) .. field(s[3])
        .. field(s[1]) .. field(s[6]) .. field(s[5]) .. field(s[2])
      members[n] = id .. '|' .. token
      local timeout = tonumber(s[3] or '')
      if timeout then
        deadlines[#deadlines + 1] = math.floor(timeout * 1000) + tonumber(ARGV[5])
        deadlines[#deadlines + 1] = id .. '|' .. ARGV[2] .. '|' .. token
      end
    end
  end
end
if #removing > 0 then redis.call('ZREM', KEYS[5], unpack(removing)) end
if n > 0 then
  redis.call('RPUSH', KEYS[2], unpack(entries))
  redis.call('SADD', KEYS[3], unpack(members))
  if counted(ARGV[6]) then redis.call('HINCRBY', KEYS[4], ARGV[3], n) end
  if #deadlines > 0 then
    local now = now_ms()
    for d = 1, #deadlines, 2 do deadlines[d] = deadlines[d] + now end
    redis.call('ZADD', KEYS[6], unpack(deadlines))
  end
end
return {n, held + n, dropped, #deadlines / 2}
