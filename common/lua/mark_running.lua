-- Record that leased tasks are running. Only tasks that run for a while are marked (the
-- worker batches them), so short tasks cost nothing here. A task whose lease has moved
-- on, or which finished meanwhile, is left alone.
-- One task.started event holds every task marked (with task events on).
-- KEYS: leases, events; then task...
-- ARGV: worker id, events cap, task events; then (task id, token, started ms)... in the
--       order of the task keys
-- Returns how many it marked.
events_to(KEYS[2], ARGV[2], ARGV[3])
local n, records = 0, {}
for i = 3, #KEYS do
  local id, token, started = ARGV[3 * i - 5], ARGV[3 * i - 4], ARGV[3 * i - 3]
  if redis.call('SISMEMBER', KEYS[1], id .. '|' .. token) == 1 then
    redis.call('HSET', KEYS[i], 'state', 'running', 'worker', ARGV[1], 'lease', token)
    n = n + 1
    if EVENTS.tasks then
      local t = redis.call('HMGET', KEYS[i], 'flow', 'queue', 'name', 'ready')
      records[#records + 1] = task_record(id, t[1], t[2], t[3], t[4], started, '', '')
    end
  end
end
emit_tasks('task.started', ARGV[1], records)
return n
