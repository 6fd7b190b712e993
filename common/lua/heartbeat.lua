-- Record a worker's heartbeat and tell the dispatcher, with how many tasks it holds.
-- A worker not registered before writes worker.joined to the events stream.
-- KEYS: worker, workers, leases, wake, events
-- ARGV: worker id, heartbeat, ttl ms, events cap
-- (heartbeat: the msgpack WorkerInfo.)
-- Returns {1 if the worker was registered already else 0, leased, Redis time ms}: the
-- worker dates its light beats (a bare ZADD of workers) on this clock.
local existed = 1 - redis.call('HSET', KEYS[1], 'info', ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
local now = now_ms()
redis.call('ZADD', KEYS[2], now, ARGV[1])
local leased = redis.call('SCARD', KEYS[3])
signal(KEYS[4], SIGNAL.heartbeat, ARGV[1], leased, ARGV[2])
if existed == 0 then
  events_to(KEYS[5], ARGV[4], '0')
  emit('worker.joined', 'w', ARGV[1])
end
return {existed, leased, now}
