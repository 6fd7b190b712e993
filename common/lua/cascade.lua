-- Settle the dependents of one task that failed or was skipped, and queue theirs in turn.
-- A plain dependent (the default trigger) settles at once: upstream_failed, or skipped
-- (Prefect 1's skip_on_upstream_skip). A gated one (a map, or another trigger) only
-- counts the upstream as settled, failed or skipped; once all have settled it goes to
-- the gate, where the dispatcher applies its trigger (balancer/gates.py).
-- Idempotent: run again, it changes nothing (the entry leaves the cascade list first;
-- only the run that removed it counts a gated dependent's upstream).
-- KEYS: cascade, flow, flow done, gate, wake, events; then child task...
-- ARGV: settled task id, ttl ms, error, how it settled ('failed' or 'skipped'), events
--       cap; then (child id, gated 0/1)...
-- Returns how many dependents it settled or counted.
local ttl, skipped = tonumber(ARGV[2]), ARGV[4] == 'skipped'
events_to(KEYS[6], ARGV[5], '0')  -- the flow's own event, when this settles it
local first = redis.call('LREM', KEYS[1], 0, ARGV[1]) > 0
local n, gated = 0, 0
for i = 7, #KEYS do
  local id, is_gated = ARGV[6 + 2 * (i - 7)], ARGV[7 + 2 * (i - 7)] == '1'
  local state = redis.call('HGET', KEYS[i], 'state')
  if is_gated then
    if first and (state == 'pending' or state == 'running') then
      redis.call('HINCRBY', KEYS[i], skipped and 'upskipped' or 'upfailed', 1)
      if redis.call('HINCRBY', KEYS[i], 'deps', -1) == 0 then
        redis.call('ZADD', KEYS[4], now_ms(), id)
        gated = gated + 1
      end
      n = n + 1
    end
  elseif state == 'pending' then
    if skipped then
      redis.call('HSET', KEYS[i], 'state', 'skipped', 'error', ARGV[3], 'result', '\192',
        'finished', now_ms(), 'deps', NEVER)
    else
      redis.call('HSET', KEYS[i], 'state', 'upstream_failed', 'error', ARGV[3],
        'finished', now_ms(), 'deps', NEVER)
    end
    redis.call('PEXPIRE', KEYS[i], ttl)
    flow_tasks_done(KEYS[2], KEYS[3], 1, skipped and 0 or 1, ttl, nil, KEYS[i])
    if tonumber(redis.call('HGET', KEYS[i], 'nchildren') or '0') > 0 then
      redis.call('RPUSH', KEYS[1], id)
    end
    n = n + 1
  end
end
if gated > 0 then signal(KEYS[5], SIGNAL.cascade) end
return n
