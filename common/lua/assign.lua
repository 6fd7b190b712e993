-- Lease ready tasks of one queue to one worker, up to `capacity` leases in all
-- (lease_tasks in the prelude says what a lease is).
-- With task events on, one dispatch event tells how many it leased.
-- KEYS: leader, inbox, leases, inflight, queue, deadlines, events, tag-inflight; then
--       task...
-- ARGV: leader token, worker id, queue name, capacity, grace ms, lease prefix, refill at,
--       prefetch depth, events cap, task events, tagged; then task id... (in the order of
--       the task keys), then with tagged 1 the counted tags of each task ('' none)
-- (tagged: 1 when some task's lease counts against tag limits, the dispatcher having
-- checked they have room: balancer/scheduling.py admit_tagged; tag_lease in the prelude.)
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
if free <= 0 or free < tonumber(ARGV[7]) or #KEYS == 8 then return {0, held, 0, 0} end
local ids, count = {}, #KEYS - 8
for i = 1, count do ids[i] = ARGV[11 + i] end
local scores = redis.call('ZMSCORE', KEYS[5], unpack(ids))
local queued, queued_keys, tags = {}, {}, nil
if ARGV[11] == '1' then tags = {} end
for i = 1, #ids do
  if scores[i] then
    queued[#queued + 1] = ids[i]
    queued_keys[#queued_keys + 1] = KEYS[8 + i]
    if tags then tags[#queued] = ARGV[11 + count + i] end
  end
end
local n, dropped, deadlines = lease_tasks(queued, queued_keys, KEYS[5], KEYS[2], KEYS[3],
  KEYS[4], KEYS[6], ARGV[2], ARGV[3], ARGV[6], free, tonumber(ARGV[5]), nil, ARGV[8], tags,
  KEYS[8])
events_to(KEYS[7], ARGV[9], ARGV[10])
if EVENTS.tasks and n > 0 then
  emit('dispatch', 'w', ARGV[2], 'q', ARGV[3], 'n', n, 'v', 'dispatcher')
end
return {n, held + n, dropped, deadlines}
