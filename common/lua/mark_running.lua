-- Record that leased tasks are running. Only tasks that run for a while are marked (the
-- worker batches them), so short tasks cost nothing here. A task whose lease has moved
-- on, or which finished meanwhile, is left alone.
-- KEYS: leases; then task...
-- ARGV: worker id; then (task id, token)... in the order of the task keys
-- Returns how many it marked.
local n = 0
for i = 2, #KEYS do
  local id, token = ARGV[2 * i - 2], ARGV[2 * i - 1]
  if redis.call('SISMEMBER', KEYS[1], id .. '|' .. token) == 1 then
    redis.call('HSET', KEYS[i], 'state', 'running', 'worker', ARGV[1], 'lease', token)
    n = n + 1
  end
end
return n
