-- Move delayed tasks whose time has come into their queues: retries past their delay,
-- the first tasks of a flow submitted to start later (a gated one goes to the gate,
-- where the dispatcher decides it, as it would have at submit), and tasks a script
-- parked here because their queue (or the gate) was a key of another type (the
-- prelude's enqueue: a parked task keeps its state, queued or pending).
-- KEYS: delayed, gate; then (task, queue)...
-- ARGV: none; then task id...
-- Returns how many it moved.
local now = now_ms()
local n = 0
for j = 0, (#KEYS - 2) / 2 - 1 do
  local task, queue, id = KEYS[3 + 2 * j], KEYS[4 + 2 * j], ARGV[1 + j]
  local due = redis.call('ZSCORE', KEYS[1], id)
  if due and tonumber(due) <= now then
    -- The record is read before anything is written: one of another type refuses the
    -- call as it was, for the caller to set the task aside. A queue of another type
    -- parks the task here again (enqueue), until the key is fixed.
    local s = redis.call('HMGET', task, 'state', 'gate', 'score')
    local state, gated = s[1], s[2] == '1'
    local into, new_state
    if state == 'scheduled' and gated then
      into, new_state = KEYS[2], 'pending'
    elseif state == 'retrying' or state == 'scheduled' then
      into, new_state = queue, 'queued'
    elseif state == 'pending' then  -- parked: it keeps its state
      into = gated and KEYS[2] or queue
    elseif state == 'queued' then
      into = queue
    end
    local moved = true
    if into then
      moved = enqueue(into, into == KEYS[2] and now or (s[3] or 0), id, KEYS[1])
      if moved then
        if new_state then redis.call('HSET', task, 'state', new_state, 'ready', now) end
        n = n + 1
      end
    end
    if moved then redis.call('ZREM', KEYS[1], id) end
  end
end
return n
