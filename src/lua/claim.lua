#!lua flags=allow-oom
-- Takes a worker id at start. KEYS: heartbeat, workers set. ARGV: heartbeat value (JSON with
-- token), TTL in ms, id, the value the caller saw (or "" for none). Returns -1 if the heartbeat
-- changed since the caller looked (someone else holds the id), else 0; requeue.lua then puts the
-- leftovers back. allow-oom: a few bytes, and a worker that cannot say it is alive has its tasks
-- taken by others.
local cur = redis.call('GET', KEYS[1])
if (cur or '') ~= ARGV[4] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 0
