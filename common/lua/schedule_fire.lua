-- Fire one due time of a schedule, or skip due times older than the catch-up window, in
-- one step: the leader's token checked, the schedule's next due time advanced, and the
-- run written (the records a submit writes, with new ids), or none of it. A leader that
-- dies before this call leaves the due time to the next leader; one that dies after it
-- has fired it once: a due time can be neither lost nor run twice. The schedule's next
-- due time and version must be what the caller read (compare and set): a stalled
-- leader, a schedule removed or registered again meanwhile, is refused.
-- KEYS: leader, schedules, schedule, flow, flows, queues, wake, flow done, gate, delayed;
--       then task... (one per task), then queue... (one per queue the run touches)
-- ARGV: leader token, schedule id, due ms, next due ms, version, skipped; then for a
--       fire: flow id, recent flows, signal, the flow's pair count and pairs, task count,
--       then per task its pair count and pairs, queue count, then per queue its name, its
--       ready count and (score, id) per ready task, then the gated task count and
--       (when, id) per gated task with no upstream (balancer.gates decides those)
-- (next due ms: '' when the schedule ended; skipped: how many due times this skips
-- without a run, 0 for a fire.)
-- Returns 1 when done, 0 when the schedule is not as read (nothing written), -1 when the
-- caller does not lead.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local id, due, nxt = ARGV[2], ARGV[3], ARGV[4]
local score = redis.call('ZSCORE', KEYS[2], id)
if not score or tonumber(score) ~= tonumber(due) then return 0 end
if redis.call('HGET', KEYS[3], 'version') ~= ARGV[5] then return 0 end
if nxt == '' then  -- ended: kept in the index, never due, for `balancer schedule ls`
  redis.call('ZADD', KEYS[2], '+inf', id)
  redis.call('HSET', KEYS[3], 'ended', due)
else
  redis.call('ZADD', KEYS[2], nxt, id)
end
local skipped = tonumber(ARGV[6])
if skipped > 0 then
  redis.call('HINCRBY', KEYS[3], 'skipped', skipped)
  redis.call('HSET', KEYS[3], 'last_skipped', due)
  return 1
end

local flow_id, recent, signal_raw = ARGV[7], tonumber(ARGV[8]), ARGV[9]
local a = 10
local function take_pairs()
  local n = tonumber(ARGV[a])
  local pairs_ = {}
  for i = 1, 2 * n do pairs_[i] = ARGV[a + i] end
  a = a + 2 * n + 1
  return pairs_
end
redis.call('HSET', KEYS[4], unpack(take_pairs()))
local n_tasks = tonumber(ARGV[a]); a = a + 1
if n_tasks == 0 then redis.call('RPUSH', KEYS[8], 'completed') end
local T = 10  -- KEYS before the tasks'
for t = 1, n_tasks do redis.call('HSET', KEYS[T + t], unpack(take_pairs())) end
local n_queues = tonumber(ARGV[a]); a = a + 1
for q = 1, n_queues do
  local name, n_ready = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  redis.call('SADD', KEYS[6], name)
  local chunk = {}
  for r = 1, n_ready do
    chunk[#chunk + 1] = ARGV[a]
    chunk[#chunk + 1] = ARGV[a + 1]
    a = a + 2
    if #chunk >= 1000 or r == n_ready then
      if type(redis.pcall('ZADD', KEYS[T + n_tasks + q], unpack(chunk))) == 'table' then
        -- A queue key of another type: they wait parked, as the prelude's enqueue parks one.
        for i = 2, #chunk, 2 do park(chunk[i], KEYS[10]) end
        signal(KEYS[7], SIGNAL.retry)
      end
      chunk = {}
    end
  end
end
local n_gated = tonumber(ARGV[a]); a = a + 1
for g = 1, n_gated do
  redis.call('ZADD', KEYS[9], ARGV[a], ARGV[a + 1])
  a = a + 2
end
local created = redis.call('HGET', KEYS[4], 'created')
redis.call('ZADD', KEYS[5], created, flow_id)
if recent > 0 then redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -recent - 1) end
redis.call('HSET', KEYS[3], 'last_flow', flow_id, 'last_due',
  redis.call('HGET', KEYS[4], 'scheduled') or '')
redis.call('HINCRBY', KEYS[3], 'fired', 1)
signal_capped(KEYS[7], signal_raw)
return 1
