-- A worker hands back tasks leased to it that it will not run: unstarted ones on
-- shutdown, and ones it lost track of (a reply lost with a dropped connection).
-- They go back to their queue at their original place.
-- KEYS: inbox, leases, inflight, wake, deadlines, then (task, queue)...
-- ARGV: worker id, then (inbox entry or "", task id)...
-- Returns how many it handed back.
local n = 0
for j = 0, (#KEYS - 5) / 2 - 1 do
  local task, queue = KEYS[6 + 2 * j], KEYS[7 + 2 * j]
  local entry, id = ARGV[2 + 2 * j], ARGV[3 + 2 * j]
  if entry ~= '' then redis.call('LREM', KEYS[1], 1, entry) end
  local s = lease_of(task)
  if (s[1] == 'assigned' or s[1] == 'running') and s[2] == ARGV[1] then
    unlease(KEYS[2], KEYS[3], id, s[4])
    redis.call('ZREM', KEYS[5], id)
    requeue(task, queue, id)
    n = n + 1
  end
end
if n > 0 then redis.call('RPUSH', KEYS[4], 's') end
return n
