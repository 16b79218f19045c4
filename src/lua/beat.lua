#!lua flags=allow-oom
-- Refreshes the heartbeat, if the id is still ours; rebuilds it and the registration after a
-- FLUSHALL. KEYS: heartbeat, workers set. ARGV: value, TTL in ms, id, token. 1 if refreshed, 0
-- if the id now belongs to another process. allow-oom: see claim.lua.
-- include ours_fn.lua
if not ours(KEYS[1], ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
