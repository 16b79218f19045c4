#!lua
-- Puts back what a fetch moved when its reply never arrived. KEYS: in-flight hash, dead list.
-- ARGV: the ids of that fetch. Each that the fetch did move goes back to the front of its queue.
-- Returns how many.
-- include requeue_fn.lua
local refused = check_types({KEYS[1], 'hash', KEYS[2], 'list'})
if refused then return refused end
local n = 0
for i = 1, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local z = string.find(v, '\0', 1, true)
    if z and usable(string.sub(v, 1, z - 1), 'list') then
      redis.call('RPUSH', string.sub(v, 1, z - 1), string.sub(v, z + 1))
    else
      redis.call('LPUSH', KEYS[2], dead_letter(z and string.sub(v, z + 1) or v, ARGV[i],
                                               z and string.sub(v, 1, z - 1) or '', 'wrong_type'))
    end
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
