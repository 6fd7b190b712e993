-- Prepended to every script at registration (common/scripts.py): helpers shared by scripts.
-- Every key a script touches arrives in KEYS; scripts never build key names.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- One task of a flow reached a terminal state. The last one settles the flow and pushes
-- its final state onto the flow's done list, which waiting clients BLPOP.
local function flow_task_done(flow_key, done_key, failed, ttl_ms)
  if failed then redis.call('HINCRBY', flow_key, 'failed', 1) end
  local left = redis.call('HINCRBY', flow_key, 'remaining', -1)
  if left == 0 then
    local state = 'completed'
    if tonumber(redis.call('HGET', flow_key, 'failed') or '0') > 0 then state = 'failed' end
    redis.call('HSET', flow_key, 'state', state, 'finished', now_ms())
    redis.call('RPUSH', done_key, state)
    redis.call('PEXPIRE', done_key, ttl_ms)
    redis.call('PEXPIRE', flow_key, ttl_ms)
  end
end

-- True when the caller holds the lease it claims: the state, the worker and the attempt
-- (the fencing token) all match. A late ack from a re-leased attempt fails this.
local function holds(task_key, state, worker, attempt)
  local s = redis.call('HMGET', task_key, 'state', 'worker', 'attempt')
  return s[1] == state and s[2] == worker and s[3] == attempt
end
