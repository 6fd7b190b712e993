-- Add or replace a schedule (balancer schedule add, flow.register_schedule()).
-- KEYS: schedules, schedule, wake
-- ARGV: schedule id, clocks, first due ms; then field/value pairs of its record
-- (clocks: the schedule's spec, balancer.schedules.Schedule.spec.)
-- A schedule registered again with the same clocks keeps its next due time, so that
-- registering at every deploy neither runs a due time twice nor skips one; with other
-- clocks (or new, or ended) it is due at `first due`. Its version goes up either way: a fire
-- prepared from the record as it was is refused (schedule_fire.lua).
-- Returns {its next due time ms, 1 when that was kept}.
local id, clocks, first = ARGV[1], ARGV[2], ARGV[3]
local due = redis.call('ZSCORE', KEYS[1], id)
local kept = 0
if due and due ~= 'inf' and redis.call('HGET', KEYS[2], 'clocks') == clocks then
  kept = 1
else
  due = first
  redis.call('ZADD', KEYS[1], first, id)
end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[2], 'clocks', clocks)
redis.call('HINCRBY', KEYS[2], 'version', 1)
signal(KEYS[3], SIGNAL.schedules)
return {due, kept}
