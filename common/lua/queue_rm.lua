-- Remove a queue from the cluster: its settings, its standing offer and its name. Only an
-- empty queue is removed (`balancer queue rm` checks first for leased, retrying, pending
-- and quarantined tasks and for workers serving it; this checks what a submit may have
-- added since, atomically).
-- KEYS: queues, queue, queue-conf, offer, inflight, wake
-- ARGV: queue name
-- Returns 1 (removed), 0 (it holds ready tasks), -1 (no such queue).
if redis.call('ZCARD', KEYS[2]) > 0 then return 0 end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  return -1
end
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('HDEL', KEYS[5], ARGV[1])
signal(KEYS[6], SIGNAL.queues)
return 1
