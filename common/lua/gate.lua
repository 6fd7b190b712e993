-- Apply the dispatcher's decision on one gated task (balancer/gates.py): a map, or a task
-- whose trigger is not the default. Only the call that takes the task out of the gate
-- acts, so a decision is applied once however often it is made (a dispatcher that
-- crashed after deciding, two dispatchers at once).
-- Modes:
--   queue    its trigger passed: queue it in its queue.
--   skip     settle it as skipped (an upstream skipped, or a SKIP-like trigger outcome).
--   fail     settle it as upstream_failed (its trigger failed) or failed (a map it could
--            not expand or gather: the error says why).
--   expand   a map: its children, their records written beforehand without a state
--            (deterministic ids and fields, so a write repeated after a crash, or by a
--            second dispatcher, is the same write, and a record without a state is
--            nothing anyone acts on), are made queued and queued; the map runs until
--            every child has settled, then comes back to the gate.
--   gather   a map whose children all settled: store the list of their results, settle
--            it, and unlock its dependents as an ack does.
-- KEYS: gate, task, flow, flow done, wake, cascade, queue, delayed; then child task...
--       (expand: the map's), then per map expanded with it (map task, child task...); or
--       (dependent task, dependent queue or the gate)... (gather)
-- ARGV: task id, mode, ttl ms, error, state, result, queue name, score, count; then
--       expand: dependents, dependent count, chained count, child id..., then per map
--       expanded with it (map id, dependents, dependent count, child id...); gather:
--       (dependent id, score, gated 0/1)...
-- (state: 'failed' or 'upstream_failed' to fail; 'completed', 'failed' or 'skipped' to
-- gather. count: the map's children, or the dependents that follow. dependents: the
-- map's new packed list of dependents, '' to leave it. A map expanded with it maps over
-- its results item by item: its children wait each for one child of the map, and it is
-- taken out of the map's dependents.)
-- Returns 1 when applied, 0 when the task had left the gate already.
local id, mode, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('ZREM', KEYS[1], id) == 0 then return 0 end
local state = redis.call('HGET', KEYS[2], 'state')
local function settle_with(new_state, failed)
  redis.call('HSET', KEYS[2], 'state', new_state, 'finished', now_ms(), 'deps', NEVER)
  redis.call('PEXPIRE', KEYS[2], ttl)
  flow_tasks_done(KEYS[3], KEYS[4], 1, failed, ttl, nil, KEYS[2])
  if new_state ~= 'completed' and tonumber(redis.call('HGET', KEYS[2], 'nchildren') or '0') > 0 then
    redis.call('RPUSH', KEYS[6], id)
    signal(KEYS[5], SIGNAL.cascade)
  end
end
if mode == 'gather' then
  if state ~= 'running' then return 0 end
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[2], 'result', ARGV[6]) end
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'error', ARGV[4]) end
  settle_with(ARGV[5], ARGV[5] == 'failed' and 1 or 0)
  if ARGV[5] == 'completed' then
    local queued = 0
    for c = 0, tonumber(ARGV[9]) - 1 do
      local cid, score, gated = ARGV[10 + 3 * c], ARGV[11 + 3 * c], ARGV[12 + 3 * c]
      if unlock(KEYS[9 + 2 * c], KEYS[10 + 2 * c], gated == '1' and now_ms() or score, cid,
                KEYS[8], KEYS[5]) then
        queued = queued + 1
      end
    end
    if queued > 0 then signal(KEYS[5], SIGNAL.submitted) end
  end
  return 1
end
if state ~= 'pending' and not (mode == 'fail' and state == 'running') then return 0 end
if mode == 'queue' then
  enqueue(KEYS[7], ARGV[8], id, KEYS[8], KEYS[5])
  signal(KEYS[5], SIGNAL.submitted, ARGV[7])
elseif mode == 'skip' then
  redis.call('HSET', KEYS[2], 'result', '\192', 'error', ARGV[4])
  settle_with('skipped', 0)
elseif mode == 'fail' then
  redis.call('HSET', KEYS[2], 'error', ARGV[4])
  settle_with(ARGV[5], 1)
elseif mode == 'expand' then
  local n, chained = tonumber(ARGV[9]), tonumber(ARGV[12])
  -- The map (and each map expanded with it) runs until its n children settled.
  local function running(key, dependents, count)
    redis.call('HSET', key, 'state', 'running', 'deps', n, 'upfailed', 0, 'upskipped', 0,
      'mapped', n, 'started', now_ms())
    if dependents ~= '' then redis.call('HSET', key, 'children', dependents, 'nchildren', count) end
  end
  running(KEYS[2], ARGV[10], ARGV[11])
  redis.call('HINCRBY', KEYS[3], 'total', n * (1 + chained))
  redis.call('HINCRBY', KEYS[3], 'remaining', n * (1 + chained))
  for c = 1, n do
    redis.call('HSET', KEYS[8 + c], 'state', 'queued')
    enqueue(KEYS[7], ARGV[8], ARGV[12 + c], KEYS[8], KEYS[5])
  end
  local k, a = 9 + n, 13 + n
  for _ = 1, chained do
    running(KEYS[k], ARGV[a + 1], ARGV[a + 2])
    if n == 0 then redis.call('ZADD', KEYS[1], now_ms(), ARGV[a]) end
    for c = 1, n do redis.call('HSET', KEYS[k + c], 'state', 'pending') end
    k, a = k + 1 + n, a + 3 + n
  end
  if n == 0 then
    redis.call('ZADD', KEYS[1], now_ms(), id)  -- nothing to wait for: gather at once
    signal(KEYS[5], SIGNAL.cascade)
  else
    signal(KEYS[5], SIGNAL.submitted, ARGV[7])
  end
end
return 1
