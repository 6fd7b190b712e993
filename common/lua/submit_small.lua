-- A small submit (a few tasks made ready, all of one queue, no queue configured) in one
-- call: the flow and task records, the flow listed, and, when the client saw a standing
-- offer for the queue, the offer taken: the ready tasks are leased at once to the
-- least-loaded offered worker with room, without waiting for the dispatcher to wake, and
-- without going through the queue. Room is a free slot for each task; a single task may
-- also take one of the worker's places (the offer's: with prefetch, behind what it runs,
-- as the dispatcher would lease it; common/signals.py: Offer). Only such a lease carries
-- the queue's prefetch depth in its inbox entry: the pool child that runs it then takes
-- what waits behind it in batches, by its ack, as it takes the dispatcher's prefetched
-- leases; a lease into a free slot carries none, and the child acks it together with its
-- next blocking fetch, one round trip. Otherwise they are queued and the dispatcher is
-- signalled. One command for the client to send and one reply to read; the fewer calls
-- inside, the shorter the latency of a one-task flow (each costs a few microseconds of
-- the server's time).
--
-- Load is the dispatcher's objective (balancer/scheduling.py: load): held leases /
-- capacity, plus what the host adds. The host's part is as the offer carries it (in coarse
-- steps: scheduling.offered_host_load); the leases are counted as they are now. Ties go to
-- the worker offered first. The offer only says which workers: everything that makes the
-- lease right is checked here, at this moment. When a check fails the tasks are queued
-- and the dispatcher is signalled as without an offer: a refused offer costs a hop, never
-- a task. Tasks with a tag that has a concurrency limit never take an offer: only the
-- dispatcher counts leases against tag limits (balancer/taglimits.py).
--
-- KEYS: flow, flows, queues, queue, wake, offer, events, backlog; then task... (one per
--       task), then with an offer: leader, queue-conf, workers, inflight, deadlines,
--       tag-limits, (inbox, leases) per offered worker, the offered workers' other queues...
-- ARGV: flow id, created ms, recent flows, queue name, signal, task count, flow pairs,
--       events cap, task events; then
--       the flow's field/value pairs, then per task: id, score, pair count, the pairs;
--       then the offer as read ('' when none), and with one: its leader epoch, lease
--       prefix, grace ms, worker count, other queue count, prefetch depth, then (worker
--       id, capacity, host load, places) per offered worker
-- (recent flows: how many recent flows to keep, 0: do not trim them this time; signal:
-- the one to send when the tasks are queued; flow pairs: how many field/value pairs the
-- flow record has; a task's score is '' when it is not ready.)
-- Returns {the worker the ready tasks were leased to or '', the queue's standing offer
-- now (false when none), for the client's next submit}.
local n_tasks = tonumber(ARGV[6])
local a = 10 + 2 * tonumber(ARGV[7])
redis.call('HSET', KEYS[1], unpack(ARGV, 10, a - 1))
events_to(KEYS[7], ARGV[8], ARGV[9])
local ids, task_keys, scores, specs, tags = {}, {}, {}, {}, {}
for t = 1, n_tasks do
  local key, id, score, n = KEYS[8 + t], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  redis.call('HSET', key, unpack(ARGV, a + 3, a + 2 + 2 * n))
  if score ~= '' then
    local i = #ids + 1
    ids[i], task_keys[i], scores[i] = id, key, score
    -- What a lease carries, from the fields being written (lease_tasks' LEASE_SPEC order).
    local given = {}
    for f = a + 3, a + 1 + 2 * n, 2 do given[ARGV[f]] = ARGV[f + 1] end
    specs[i] = {given.fn, given.args, given.timeout, given.flow, given.children, given.name,
                nil, given.sig, given.ready}
    if given.tags and given.tags ~= '' then
      for tag in string.gmatch(given.tags, '[^,]+') do tags[#tags + 1] = tag end
    end
  end
  a = a + 3 + 2 * n
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if ARGV[3] ~= '0' then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[3]) - 1) end

local raw = ARGV[a]
-- The offered worker to lease to (its index in the offer) and what it holds, or nil when
-- the offer must be refused. Offer keys start at KEYS[k], offer arguments after the offer
-- itself at ARGV[o].
local k, o = 9 + n_tasks, a + 1
local n_workers, n_other = tonumber(ARGV[o + 3] or '0'), tonumber(ARGV[o + 4] or '0')
local first_other = k + 6 + 2 * n_workers
-- Offered worker w's arguments: id, capacity, host load, places.
local function warg(w, i) return ARGV[o + 1 + 4 * w + i] end
-- A single task may take a place behind running ones; several need a free slot each (on
-- one worker they would run one after another while another worker may be free).
local roomy = #ids == 1
-- The queue's offer now (returned for the client's next submit). Not read together with
-- the leader in one MGET: a client's ACL user (`balancer acl`) set up before would be
-- refused MGET, and every small submit with it, for a microsecond. A key of another type
-- (written by hand) reads as no offer: an offer only saves a hop, and must never cost a
-- submit.
local offer_now = redis.pcall('GET', KEYS[6])
if type(offer_now) == 'table' then offer_now = false end
-- Worker x goes before worker y: less load, the one offered first on a tie.
local function before(x, y)
  return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2])
end
local function chosen()
  -- Still the dispatcher's offer, made by the dispatcher that leads now.
  if raw == '' or #ids == 0 or offer_now ~= raw then return nil end
  local leader = redis.call('GET', KEYS[k])
  if not leader or string.sub(leader, 1, #ARGV[o] + 1) ~= ARGV[o] .. '|' then return nil end
  -- The queue may hand out work without counting it, and nothing else waits: not in this
  -- queue (order), nor in the offered workers' other queues (priority across queues).
  local conf = redis.call('HMGET', KEYS[k + 1], 'paused', 'concurrency_limit')
  if conf[1] == '1' or (conf[2] and conf[2] ~= '') then return nil end
  if redis.call('ZCARD', KEYS[4]) > 0 then return nil end
  if #tags > 0 then
    for _, limit in ipairs(redis.call('HMGET', KEYS[k + 5], unpack(tags))) do
      if limit then return nil end
    end
  end
  for i = first_other, first_other + n_other - 1 do
    if redis.call('ZCARD', KEYS[i]) > 0 then return nil end
  end
  -- The least loaded worker with a slot per task that lives (reaping removes it from
  -- workers): liveness is read for the best only, then the next best if it is gone.
  -- A worker's load is at least its host's part (held / capacity adds to it), so the
  -- workers are counted in the order of that part, and the counting stops once the best
  -- counted goes before every worker not counted yet: the same choice as counting them
  -- all, and one SCARD instead of one per offered worker when the first is free.
  local order = {}
  for w = 1, n_workers do order[w] = {tonumber(warg(w, 3)), w} end
  table.sort(order, before)
  local fit, next_up = {}, 1
  while true do
    local best
    for i, f in ipairs(fit) do
      if not best or before(f, fit[best]) then best = i end
    end
    local ahead = order[next_up]
    if best and (not ahead or before(fit[best], ahead)) then
      local f = table.remove(fit, best)
      if redis.call('ZSCORE', KEYS[k + 2], warg(f[2], 1)) then return f[2], f[3] end
    elseif ahead then
      local w = ahead[2]
      local capacity = tonumber(warg(w, 2))
      local room = roomy and tonumber(warg(w, 4)) or capacity
      local held = redis.call('SCARD', KEYS[k + 5 + 2 * w])
      if held + #ids <= room then fit[#fit + 1] = {held / capacity + ahead[1], w, held} end
      next_up = next_up + 1
    else
      return nil
    end
  end
end

-- A key the checks read holding another type refuses the offer, as a failed check does.
local fine, w, held = pcall(chosen)
if not fine or not w then
  -- Queued for the dispatcher, as any submit. It is not woken while it keeps the
  -- queue's backlog for room to come (KEYS[8], which it sets with a short life): the room
  -- freed wakes it (an ack, a worker come), and it reads the queue then.
  for i = 1, #ids do redis.call('ZADD', KEYS[4], scores[i], ids[i]) end
  redis.call('SADD', KEYS[3], ARGV[4])
  if redis.call('EXISTS', KEYS[8]) == 0 then signal_capped(KEYS[5], ARGV[5]) end
  return {'', offer_now}
end
-- Leased at once: never queued (the queue is known: the dispatcher offered it).
local worker, inbox, leases = warg(w, 1), KEYS[k + 4 + 2 * w], KEYS[k + 5 + 2 * w]
local behind = held + #ids > tonumber(warg(w, 2))  -- a place behind running tasks
local n, _, deadlines = lease_tasks(ids, task_keys, KEYS[4], inbox, leases, KEYS[k + 3],
  KEYS[k + 4], worker, ARGV[4], ARGV[o + 1], #ids, tonumber(ARGV[o + 2]), specs,
  behind and ARGV[o + 5] or nil)
-- The dispatcher is woken only to watch the deadlines these leases carry. Otherwise it
-- learns what the worker holds from its next ack: a wake-up here would cost it CPU at the
-- very moment the worker starts the task, and its count being low meanwhile costs at
-- most an assign that finds no room (assign.lua counts for itself).
if deadlines > 0 then
  signal(KEYS[5], SIGNAL.offer_taken, worker, held + n)
end
if EVENTS.tasks and n > 0 then
  emit('dispatch', 'w', worker, 'q', ARGV[4], 'n', n, 'v', 'offer')
end
return {worker, offer_now}
