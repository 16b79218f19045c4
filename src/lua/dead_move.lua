#!lua
-- Moves one dead letter exactly once, whoever else runs it at the same time: back into a queue
-- (qworkerctl dead retry) or away (purge). KEYS: dead list, dead payloads hash, then for a retry
-- the queue. ARGV: the letter's exact bytes, its payload_ref ('' if none), the payload to push
-- ('': the payloads hash holds it, under payload_ref). Returns 1 once moved, 0 if the letter is
-- no longer there (moved by someone else first).
-- Lua does not roll back: everything that could fail is checked before the first write.
local retry = KEYS[3] ~= nil
for i, want in ipairs({'list', 'hash', 'list'}) do
  local k = KEYS[i]
  if k then
    local t = redis.call('TYPE', k)['ok']
    if t ~= 'none' and t ~= want then
      return redis.error_reply('WRONGTYPE ' .. k .. ' is a ' .. t .. ', not a ' .. want)
    end
  end
end
local payload = ARGV[3]
if retry and ARGV[2] ~= '' then
  payload = redis.call('HGET', KEYS[2], ARGV[2])
  if not payload then
    return redis.error_reply('NOPAYLOAD ' .. KEYS[2] .. ' holds no ' .. ARGV[2])
  end
end
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if retry then redis.call('LPUSH', KEYS[3], payload) end
if ARGV[2] ~= '' then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
