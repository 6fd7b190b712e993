-- A worker's idle slot takes its next entries, checked: what the blocking fetch just moved
-- out of the inbox (BLMOVE to fetched:<worker>, sent in the same round trip, just before
-- this script), then more from the inbox, up to count. worker/inbox.py.
-- KEYS: inbox, leases, fetched
-- (fetched left out by a busy slot's fetch, which knows nothing waits there: one LPOP less.)
-- ARGV: count
-- (count: how many entries at most.)
-- Returns {entries taken, entries dropped as they hold no lease, entries the inbox still
--          holds} (the last: whether the slot's next fetch may take without blocking).
local taken, forged = take_held(KEYS[1], KEYS[2], ARGV[1], KEYS[3])
return {taken, forged, redis.call('LLEN', KEYS[1])}
