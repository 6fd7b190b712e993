-- A worker's idle slot takes the entries waiting in its inbox without blocking (when
-- there are none, it blocks on the inbox with BLMPOP and checks what that returns).
-- KEYS: inbox, leases
-- ARGV: count
-- (count: how many entries at most.)
-- Returns {entries taken, entries dropped as they hold no lease}.
local taken, forged = take_held(KEYS[1], KEYS[2], ARGV[1])
return {taken, forged}
