-- Lease ready tasks of one queue to one worker, up to `capacity` leases in all
-- (lease_tasks in the prelude says what a lease is).
-- With task events on, one dispatch event tells how many it leased.
-- KEYS: leader, inbox, leases, inflight, queue, deadlines, events; then task...
-- ARGV: leader token, worker id, queue name, capacity, grace ms, lease prefix, refill at,
--       prefetch depth, events cap, task events; then task id... (in the order of the
--       task keys)
-- The lease prefix is "<epoch>.<batch>[u]" (common/protocol.py: "u" when the queue has no
-- concurrency limit, not counted in inflight). Refill at: the fewest free places worth a
-- lease (a worker with prefetched tasks is refilled only once it has run down to its
-- refill point, even when the caller's count of what it holds is behind). The prefetch
-- depth goes into each inbox entry, for a pool child to take its batches by.
-- Returns {assigned, leased after, dropped, deadlines set}; {-1, 0, 0, 0} when the caller
-- is not the leader. Ids no longer in the queue (taken meanwhile) are skipped.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0, 0, 0} end
local held = redis.call('SCARD', KEYS[3])
local free = tonumber(ARGV[4]) - held
if free <= 0 or free < tonumber(ARGV[7]) or #KEYS == 7 then return {0, held, 0, 0} end
local ids = {}
for i = 8, #KEYS do ids[i - 7] = ARGV[i + 3] end
local scores = redis.call('ZMSCORE', KEYS[5], unpack(ids))
local queued, queued_keys = {}, {}
for i = 1, #ids do
  if scores[i] then
    queued[#queued + 1] = ids[i]
    queued_keys[#queued_keys + 1] = KEYS[7 + i]
  end
end
local n, dropped, deadlines = lease_tasks(queued, queued_keys, KEYS[5], KEYS[2], KEYS[3],
  KEYS[4], KEYS[6], ARGV[2], ARGV[3], ARGV[6], free, tonumber(ARGV[5]), nil, ARGV[8])
events_to(KEYS[7], ARGV[9], ARGV[10])
if EVENTS.tasks and n > 0 then
  emit('dispatch', 'w', ARGV[2], 'q', ARGV[3], 'n', n, 'v', 'dispatcher')
end
return {n, held + n, dropped, deadlines}
