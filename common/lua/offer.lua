-- A small submit takes the dispatcher's standing offer for its queue: its ready tasks,
-- just queued in the same transaction, are leased at once to the least-loaded offered
-- worker with a free slot for each, without waiting for the dispatcher to wake.
-- Load is the dispatcher's objective (balancer/scheduling.py: load): held leases /
-- capacity, plus what the host adds. The host's part is as the offer carries it (in coarse
-- steps: scheduling.offered_host_load); the leases are counted as they are now. Ties go to
-- the worker offered first.
-- The offer only says which workers: everything that makes the lease right is checked
-- here, at this moment. When a check fails the tasks stay queued and the dispatcher is told
-- of them instead (the signal the submit would have sent): a refused offer costs a hop,
-- never a task.
-- KEYS: leader, offer, queue, queue-conf, workers, inflight, deadlines, wake,
--       (inbox, leases) per offered worker, the offered workers' other queues..., task...
-- ARGV: offer as read, its leader epoch, queue name, lease token prefix, grace ms,
--       number of offered workers, number of other queues, signal if refused, wake list cap,
--       (worker id, capacity, host load) per offered worker, task id... (same order as the
--       task keys)
-- Returns the worker all the tasks were leased to, or '' when refused.
local n_workers, n_other = tonumber(ARGV[6]), tonumber(ARGV[7])
local first_other = 9 + 2 * n_workers
local first_task = first_other + n_other
local ids, task_keys = {}, {}
for i = first_task, #KEYS do
  task_keys[#task_keys + 1] = KEYS[i]
  ids[#ids + 1] = ARGV[9 + 3 * n_workers + #ids + 1]
end

-- The offered worker to lease to (its index), or nil when the offer must be refused.
local function chosen()
  -- Still the dispatcher's offer, made by the dispatcher that leads now.
  if #ids == 0 or redis.call('GET', KEYS[2]) ~= ARGV[1] then return nil end
  local leader = redis.call('GET', KEYS[1])
  if not leader or string.sub(leader, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' then return nil end
  -- The queue may hand out work without counting it, and nothing else waits: not in this
  -- queue (order), nor in the offered workers' other queues (priority across queues).
  local conf = redis.call('HMGET', KEYS[4], 'paused', 'concurrency_limit')
  if conf[1] == '1' or (conf[2] and conf[2] ~= '') then return nil end
  if redis.call('ZCARD', KEYS[3]) ~= #ids then return nil end
  for i = first_other, first_task - 1 do
    if redis.call('ZCARD', KEYS[i]) > 0 then return nil end
  end
  -- The least loaded worker that lives (reaping removes it from workers) with a slot per
  -- task.
  local best, best_load = nil, nil
  for w = 1, n_workers do
    local worker = ARGV[7 + 3 * w]
    local capacity, host = tonumber(ARGV[8 + 3 * w]), tonumber(ARGV[9 + 3 * w])
    local held = redis.call('SCARD', KEYS[8 + 2 * w])
    if held + #ids <= capacity and redis.call('ZSCORE', KEYS[5], worker) then
      local load = held / capacity + host
      if not best_load or load < best_load then best, best_load = w, load end
    end
  end
  return best
end

local w = chosen()
if not w then
  signal_capped(KEYS[8], ARGV[8], ARGV[9])
  return ''
end
local worker, inbox, leases = ARGV[7 + 3 * w], KEYS[7 + 2 * w], KEYS[8 + 2 * w]
lease_tasks(ids, task_keys, KEYS[3], inbox, leases, KEYS[6], KEYS[7], worker,
  ARGV[3], ARGV[4], #ids, tonumber(ARGV[5]))
signal_capped(KEYS[8], 'l|' .. worker .. '|' .. redis.call('SCARD', leases), ARGV[9])
return worker
