-- A worker hands back tasks leased to it that it will not run: unstarted ones on
-- shutdown, ones prefetched behind a long run, and ones it lost track of (a reply lost
-- with a dropped connection). They go back to their queue at their original place.
-- A task handed back with its inbox entry is left alone if the entry is gone: the
-- worker's slots took it meanwhile and run it.
-- KEYS: inbox, leases, inflight, wake, deadlines, tag-inflight, delayed; then (task,
--       queue)...
-- ARGV: worker id; then (inbox entry, task id, token, queue name)...
-- (inbox entry "": the worker took it out of its inbox.)
-- Returns how many it handed back.
local n = 0
for j = 0, (#KEYS - 7) / 2 - 1 do
  local task, queue = KEYS[8 + 2 * j], KEYS[9 + 2 * j]
  local entry, id, token, name = ARGV[2 + 4 * j], ARGV[3 + 4 * j], ARGV[4 + 4 * j],
    ARGV[5 + 4 * j]
  if (entry == '' or redis.call('LREM', KEYS[1], 1, entry) == 1)
      and unlease(KEYS[2], id, token) then
    if counted(token) then lease_count(KEYS[3], name, -1) end
    untag(task, KEYS[6], token)
    redis.call('ZREM', KEYS[5], id .. '|' .. ARGV[1] .. '|' .. token)
    requeue(task, queue, id, KEYS[7], KEYS[4])
    n = n + 1
  end
end
if n > 0 then signal(KEYS[4], SIGNAL.submitted) end
return n
