#!lua
-- Requeues the in-flight tasks of workers whose heartbeat expired. KEYS: workers set, dead list.
-- ARGV: key prefix, own id, how many at most. Returns a flat array of (id, requeued, left) for
-- each dead worker seen; one is forgotten once nothing of it is left. Keys are built here
-- because which workers are dead is only known inside the script (fine on a single Redis; not
-- for Cluster).
-- include requeue_fn.lua
local refused = check_types({KEYS[1], 'set', KEYS[2], 'list'})
if refused then return refused end
local out = {}
local budget = tonumber(ARGV[3])
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if budget <= 0 then break end
  local hash = ARGV[1] .. ':inflight:' .. id
  if id ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. ':worker:' .. id) == 0
     and usable(hash, 'hash') then
    local n = requeue_some(hash, budget, KEYS[2])
    local left = redis.call('HLEN', hash)
    if left == 0 then
      redis.call('SREM', KEYS[1], id)
      redis.call('DEL', ARGV[1] .. ':recorded:' .. id)
    end
    budget = budget - n
    out[#out + 1] = id
    out[#out + 1] = n
    out[#out + 1] = left
  end
end
return out
