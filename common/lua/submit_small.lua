-- A small submit (a few tasks made ready, all of one queue, no queue configured) in one
-- call: the flow and task records, the ready tasks queued, the flow listed. One script
-- instead of a transaction of a command per record: a one-task submit is latency, and
-- the client's cost is per command sent and per reply parsed.
-- With a standing offer to take (offer.lua, sent next in the same round trip), no signal
-- goes to the dispatcher here: offer.lua leases the tasks, or signals when it refuses.
-- KEYS: flow, flows, queues, queue, wake, offer, then one task key per task
-- ARGV: flow id, created ms, recent flows kept, queue name, signal ('' when an offer
--       follows), number of flow field/value pairs, the pairs, then per task:
--       id, score ('' when not ready), number of field/value pairs, the pairs
-- Returns the standing offer of the queue (nil when none), for the client's next submit.
local a = 7 + 2 * tonumber(ARGV[6])
redis.call('HSET', KEYS[1], unpack(ARGV, 7, a - 1))
for k = 7, #KEYS do
  local id, score, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  redis.call('HSET', KEYS[k], unpack(ARGV, a + 3, a + 2 + 2 * n))
  if score ~= '' then redis.call('ZADD', KEYS[4], score, id) end
  a = a + 3 + 2 * n
end
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[3]) - 1)
if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[5], ARGV[5]) end
return redis.call('GET', KEYS[6])
