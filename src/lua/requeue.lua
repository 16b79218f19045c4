#!lua
-- Puts back a chunk of this worker's in-flight hash (a previous run's leftovers) at the front of
-- their queues. KEYS: in-flight hash, dead list. ARGV: how many at most.
-- Returns {how many, how many are left}.
-- include requeue_fn.lua
local refused = check_types({KEYS[1], 'hash', KEYS[2], 'list'})
if refused then return refused end
local moved = requeue_some(KEYS[1], tonumber(ARGV[1]), KEYS[2])
return {moved, redis.call('HLEN', KEYS[1])}
