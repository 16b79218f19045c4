#!lua
-- Takes one member out of the schedule and counts it as cancelled, as one step (qworkerctl
-- cancel): only the caller that removes it counts it, and an interrupted call never removes
-- without counting. KEYS: schedule, stats hash. ARGV: the member's exact bytes, its queue's name.
-- Returns 1 once removed, 0 if it was no longer there.
-- Lua does not roll back: the types, and the counts being counts, are checked before the first
-- write.
for i, want in ipairs({'zset', 'hash'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. t .. ', not a ' .. want)
  end
end
local fields = {'cancelled', 'queue:' .. ARGV[2] .. ':cancelled'}
for _, f in ipairs(fields) do
  local v = redis.call('HGET', KEYS[2], f)
  if v and not string.match(v, '^%-?%d+$') then
    return redis.error_reply('NOTANINTEGER ' .. KEYS[2] .. ' ' .. f .. ' is not a count')
  end
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
for _, f in ipairs(fields) do redis.call('HINCRBY', KEYS[2], f, 1) end
return 1
