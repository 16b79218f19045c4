#!lua
-- Moves due entries of the schedule (retries, delayed tasks: any worker's) back to the front of
-- their queues. KEYS: schedule, dead list. ARGV: now (unix ms), how many at most. Each member is
-- JSON {"queue", "task", "push"} (see src/wire.c); ZREM makes each move once, whichever worker
-- runs this. An entry that is not such JSON, or whose queue is not a list, goes to the dead list.
-- Returns how many moved and the next due time (or false).
-- include requeue_fn.lua
local refused = check_types({KEYS[1], 'zset', KEYS[2], 'list'})
if refused then return refused end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  if redis.call('ZREM', KEYS[1], m) == 1 then
    local ok, e = pcall(cjson.decode, m)
    if ok and type(e) == 'table' and type(e.queue) == 'string' and type(e.task) == 'string'
       and usable(e.queue, 'list') then
      redis.call('RPUSH', e.queue, e.task)
    else
      redis.call('LPUSH', KEYS[2], dead_letter(m, '', ok and type(e) == 'table' and
                                               type(e.queue) == 'string' and e.queue or '',
                                               'bad_schedule_entry'))
    end
  end
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false}
