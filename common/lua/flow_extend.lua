-- Add tasks to an open flow run (a @flow function's, balancer/dynamic.py), in one step:
-- their records, their listing in the run, the run's counts, the ready ones queued. The
-- run counts them as any submit's, so that it settles only when they have: while open it
-- holds one more in `remaining` (its function), which flow_close.lua gives back.
-- KEYS: flow, flow tasks, queues, wake, delayed; then (task, queue) per task
-- ARGV: flow id, task count, signal; then per task: id, queue name, score, listing, pair
--       count, the pairs
-- (score: '' when the task waits for upstream tasks, which the client releases with
-- flow_release.lua; listing: the entry for the run's list of tasks; signal: sent when a
-- task was queued.)
-- Returns the number of tasks added, or (nothing written) -2 if the run was cancelled,
-- -1 if it is not open otherwise (its function returned).
if redis.call('HGET', KEYS[1], 'open') ~= '1' then
  if redis.call('HGET', KEYS[1], 'state') == 'cancelled' then return -2 end
  return -1
end
local n = tonumber(ARGV[2])
local a, queued, listings = 4, 0, {}
for t = 0, n - 1 do
  local task, queue = KEYS[6 + 2 * t], KEYS[7 + 2 * t]
  local id, queue_name, score, listing = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local pairs_n = tonumber(ARGV[a + 4])
  redis.call('HSET', task, unpack(ARGV, a + 5, a + 4 + 2 * pairs_n))
  if score ~= '' then
    enqueue(queue, score, id, KEYS[5], KEYS[4])
    redis.call('SADD', KEYS[3], queue_name)
    queued = queued + 1
  end
  listings[#listings + 1] = listing
  a = a + 5 + 2 * pairs_n
end
if n > 0 then
  redis.call('RPUSH', KEYS[2], unpack(listings))
  redis.call('HINCRBY', KEYS[1], 'total', n)
  redis.call('HINCRBY', KEYS[1], 'remaining', n)
end
if queued > 0 then signal_capped(KEYS[4], ARGV[3]) end
return n
