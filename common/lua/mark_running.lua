-- Record that leased tasks are running. Only tasks that run for a while are marked (the
-- worker batches them), so short tasks cost nothing here. A task whose lease has moved
-- on, or which finished meanwhile, is left alone.
-- KEYS: leases, then task...    ARGV: (task id, token)... in the order of the task keys
-- Returns how many it marked.
local n = 0
for i = 2, #KEYS do
  local id, token = ARGV[2 * i - 3], ARGV[2 * i - 2]
  if redis.call('SISMEMBER', KEYS[1], id .. '|' .. token) == 1 then
    redis.call('HSET', KEYS[i], 'state', 'running')
    n = n + 1
  end
end
return n
