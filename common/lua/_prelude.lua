-- Prepended to every script at registration (common/scripts.py): helpers shared by scripts.
-- Every key a script touches arrives in KEYS; scripts never build key names.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Tasks of a flow reached a terminal state (`failed` of them unsuccessfully). The last one
-- settles the flow and pushes its final state onto the flow's done list, which waiting
-- clients BLPOP.
local function flow_tasks_done(flow_key, done_key, n, failed, ttl_ms)
  if failed > 0 then redis.call('HINCRBY', flow_key, 'failed', failed) end
  local left = redis.call('HINCRBY', flow_key, 'remaining', -n)
  if left == 0 then
    local state = 'completed'
    if tonumber(redis.call('HGET', flow_key, 'failed') or '0') > 0 then state = 'failed' end
    redis.call('HSET', flow_key, 'state', state, 'finished', now_ms())
    redis.call('RPUSH', done_key, state)
    redis.call('PEXPIRE', done_key, ttl_ms)
    redis.call('PEXPIRE', flow_key, ttl_ms)
  end
end

-- A lease is the member "id|token" of its worker's leases set; the token is new for every
-- lease. Removing the member is the fencing check: it succeeds once, for the holder of
-- the current lease, and never for a late ack of a lease that was taken back.
local function unlease(leases_key, id, token)
  return redis.call('SREM', leases_key, id .. '|' .. token) == 1
end

-- Only leases of queues with a concurrency limit are counted in `inflight` (one write per
-- batch saved everywhere else); the dispatcher marks the others with a "u" in the token.
local function counted(token)
  return not string.find(token, 'u', 1, true)
end

-- Put a task back into its queue at its original place.
local function requeue(task_key, queue_key, id)
  redis.call('HSET', task_key, 'state', 'queued')
  redis.call('HDEL', task_key, 'worker')
  redis.call('ZADD', queue_key, redis.call('HGET', task_key, 'score') or 0, id)
end

-- Quarantine a task whose runs keep killing workers. It stays in its flow, which waits
-- until an operator retries it (`balancer dlq retry`) or gives it up (`balancer dlq purge`).
local function quarantine(task_key, dlq_key, id, error)
  redis.call('HSET', task_key, 'state', 'dead', 'error', error, 'finished', now_ms())
  redis.call('HDEL', task_key, 'worker')
  redis.call('ZADD', dlq_key, now_ms(), id)
end

-- Fail a task for good: it settles in its flow, and its dependents are queued for failing.
local function fail_for_good(task_key, id, error, flow_key, done_key, cascade_key, wake_key, ttl)
  redis.call('HSET', task_key, 'state', 'failed', 'error', error, 'finished', now_ms())
  redis.call('PEXPIRE', task_key, ttl)
  if tonumber(redis.call('HGET', task_key, 'nchildren') or '0') > 0 then
    redis.call('RPUSH', cascade_key, id)
    redis.call('RPUSH', wake_key, 'c')
  end
  flow_tasks_done(flow_key, done_key, 1, 1, ttl)
end

-- The dependents of a failed task must never be queued: their unmet count stays high.
local NEVER = 1000000000
