-- Acknowledge a batch of finished tasks of one worker: store results, free the slots,
-- unlock dependents. A dependent whose last upstream this was is queued here, so it is
-- queued exactly once. Calling it again for the same lease (a reply lost to a dropped
-- connection) changes nothing and answers as the first call did.
-- A slot that has nothing else to run asks for its next lease in the same call ("take"):
-- one round trip per task instead of an ack and then a fetch.
-- A pool child takes several leases at once (its batch); those after the first are
-- recorded under its field of the ahead hash as perhaps started, so that the reaper of a
-- dead worker makes them suspects instead of counting a loss. The child rewrites the
-- field only when it starts a suspect (worker/batchslot.py).
-- KEYS: leases, inflight, wake, deadlines, inbox, ahead, idle, events, tag-inflight,
--       delayed; then per task: task, flow, flow done, then (child task, child queue) per
--       child
-- The ack signal ('settled') says how many leases the worker still holds; dependents it
-- queued are told apart, as a submit is: the names of their queues (a dispatcher reads
-- only the queues a signal names, and every queue on a signal that names none, as
-- 'ack' from a worker of an earlier release). A worker holding more than
-- "quiet above" (-1: always signal) is not due a refill, and is not worth a wake-up
-- unless the call queued dependents (they are new work for the dispatcher); below it, at
-- checkpoints on the way down. While the dispatcher is idle (it found every queue a
-- worker serves empty and set the idle key), a freed slot has nothing to be refilled
-- with: no signal then either, unless dependents were queued. The dispatcher recounts
-- what the workers hold when it next has work (balancer/dispatcher.py: _recount). The
-- rule is written out in common/prefetch.py. A lease that counted against a tag limit
-- always signals: a task waiting for that tag's place may go now.
-- ARGV: worker id, ttl ms, finished ms, task count, take, quiet above, ahead field,
--       events cap, task events; then per task: id, token, queue, started ms, result, has
--       deadline, event record, child count, then (child id, child score, child queue
--       name) per child
-- (finished ms: Redis's clock as the worker reckons it, common/redisclock.py; ahead
-- field '': none, the leases taken start at once; has deadline: 1 or 0; event record: the task's record in the task.completed event,
-- whose one entry holds every task stored, built by the worker (common/events.py: every
-- field of it is the worker's to know), so that Redis's one thread only joins them; a
-- dependent made ready gets its ready time when task events are on.)
-- Returns {per task 1 (stored) or 0 (refused: the lease moved on), inbox entries taken,
--          entries dropped as they hold no lease}.
local ttl, now = ARGV[2], ARGV[3]  -- as given: only ever passed on to PEXPIRE
local a, k = 10, 11
events_to(KEYS[8], ARGV[8], ARGV[9])
-- The flows this call settles ride in its task.completed entry (one write for both).
if EVENTS.tasks then EVENTS.flows = {} end
local out, per_queue, per_flow, stored, unlocked, records = {}, {}, {}, 0, 0, {}
local filled, filled_names = {}, {}  -- the queues dependents went to (or the gate, for)
local untagged = 0
for t = 1, tonumber(ARGV[4]) do
  local id, token, queue = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local children = tonumber(ARGV[a + 7])
  local task, flow = KEYS[k], KEYS[k + 1]
  if unlease(KEYS[1], id, token) then
    redis.call('HSET', task, 'state', 'completed', 'result', ARGV[a + 4],
      'started', ARGV[a + 3], 'finished', now, 'worker', ARGV[1], 'lease', token)
    redis.call('PEXPIRE', task, ttl)
    if ARGV[a + 5] == '1' then
      redis.call('ZREM', KEYS[4], id .. '|' .. ARGV[1] .. '|' .. token)
    end
    for c = 0, children - 1 do
      if unlock(KEYS[k + 3 + 2 * c], KEYS[k + 4 + 2 * c], ARGV[a + 9 + 3 * c],
                ARGV[a + 8 + 3 * c], KEYS[10], KEYS[3]) then
        if EVENTS.tasks then redis.call('HSET', KEYS[k + 3 + 2 * c], 'ready', now) end
        unlocked = unlocked + 1
        local name = ARGV[a + 10 + 3 * c]
        if not filled[name] then
          filled[name] = true
          filled_names[#filled_names + 1] = name
        end
      end
    end
    if EVENTS.tasks then records[#records + 1] = ARGV[a + 6] end
    if counted(token) then per_queue[queue] = (per_queue[queue] or 0) + 1 end
    untagged = untagged + untag(task, KEYS[9], token)
    local f = per_flow[flow]
    if not f then
      f = {KEYS[k + 2], 0}
      per_flow[flow] = f
    end
    f[2] = f[2] + 1
    stored = stored + 1
    out[t] = 1
  else
    local s = redis.call('HMGET', task, 'state', 'lease')
    out[t] = (s[1] == 'completed' and s[2] == token) and 1 or 0
  end
  a = a + 8 + 3 * children
  k = k + 3 + 2 * children
end
for queue, count in pairs(per_queue) do lease_count(KEYS[2], queue, -count) end
for flow, f in pairs(per_flow) do flow_tasks_done(flow, f[1], f[2], 0, ttl, now) end
emit_tasks_and_flows('task.completed', ARGV[1], records)
-- Run down below the refill point, a worker signals at checkpoints (quiet, half of it, a
-- quarter, ..., 1, 0 leases held), not at every ack: the first one wakes the dispatcher
-- to refill; the next ones insist in case it could not yet (0 always signals).
-- (prefetch.passes_checkpoint mirrors it.)
local function passes_checkpoint(before, after, quiet)
  if after == 0 then return true end
  local c = quiet
  while c >= 1 do
    if after <= c and c < before then return true end
    c = math.floor(c / 2)
  end
  return false
end
if stored > 0 and (unlocked > 0 or redis.call('EXISTS', KEYS[7]) == 0) then
  local held, quiet = redis.call('SCARD', KEYS[1]), tonumber(ARGV[6])
  if quiet < 0 or unlocked > 0 or untagged > 0 or passes_checkpoint(held + stored, held,
                                                                     quiet) then
    signal(KEYS[3], SIGNAL.settled, ARGV[1], held)
  end
  if unlocked > 0 then
    table.sort(filled_names)
    signal(KEYS[3], SIGNAL.submitted, table.concat(filled_names, ' '))
  end
end
local taken, forged = {}, {}
if tonumber(ARGV[5]) > 0 then taken, forged = take_held(KEYS[5], KEYS[1], ARGV[5]) end
if #taken > 1 and ARGV[7] ~= '' then
  local members = {}
  for i = 2, #taken do members[i - 1] = string.match(taken[i], '^[^|]*|[^|]*') end
  redis.call('HSET', KEYS[6], ARGV[7], table.concat(members, ' '))
end
return {out, taken, forged}
