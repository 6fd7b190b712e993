-- Take back every task of a dead (or departed) worker. Tasks still in its inbox, or taken
-- ahead by a pool child and not started, go back to their queue at their original place;
-- a task it had started counts a loss, and past the poison threshold is quarantined
-- instead (the caller tells which had started). A task taken ahead may have been running
-- (the child tells Redis of its starts only for suspects): it becomes a suspect.
-- Writes worker.reaped (or worker.left, for a worker that deregistered) and a
-- task.quarantined event per task quarantined.
-- KEYS: leader, worker, workers, inbox, leases, inflight, dlq, deadlines, ahead, events,
--       tag-inflight, delayed; then (task, queue)...
-- ARGV: leader token, worker id, seen before ms, poison threshold, quarantine error,
--       events cap, task events, why; then (task id, lease token, started)...
-- (seen before ms 0: reap regardless; started: 1, 0, or 'a' taken ahead; why: reaped or
-- left.)
-- Returns {requeued, quarantined}, or {-1, 0} if not leader, {-2, 0} if the worker is alive.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, 0} end
local seen = redis.call('ZSCORE', KEYS[3], ARGV[2])
if ARGV[3] ~= '0' and seen and tonumber(seen) >= tonumber(ARGV[3]) then return {-2, 0} end
events_to(KEYS[10], ARGV[6], ARGV[7])
local requeued, dead = 0, 0
for j = 0, (#KEYS - 12) / 2 - 1 do
  local task, queue = KEYS[13 + 2 * j], KEYS[14 + 2 * j]
  local id, token, started = ARGV[9 + 3 * j], ARGV[10 + 3 * j], ARGV[11 + 3 * j]
  if redis.call('SISMEMBER', KEYS[5], id .. '|' .. token) == 1 then
    local name = redis.call('HGET', task, 'queue')
    if name and counted(token) then lease_count(KEYS[6], name, -1) end
    untag(task, KEYS[11], token)
    redis.call('ZREM', KEYS[8], id .. '|' .. ARGV[2] .. '|' .. token)
    local lost = 0
    if started == '1' then lost = redis.call('HINCRBY', task, 'lost', 1) end
    if started == 'a' then redis.call('HSET', task, 'suspect', 1) end
    if lost >= tonumber(ARGV[4]) then
      quarantine(task, KEYS[7], id, ARGV[5])
      emit_task('task.quarantined', task, id, ARGV[2], 'killed its workers', '', now_ms())
      dead = dead + 1
    else
      requeue(task, queue, id, KEYS[12])  -- its caller looks at the delayed set
      requeued = requeued + 1
    end
  end
end
redis.call('DEL', KEYS[2], KEYS[4], KEYS[5], KEYS[9])
redis.call('ZREM', KEYS[3], ARGV[2])
emit('worker.' .. (ARGV[8] == 'left' and 'left' or 'reaped'), 'w', ARGV[2], 'n', requeued,
  'x', dead)
return {requeued, dead}
