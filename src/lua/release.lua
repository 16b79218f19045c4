#!lua flags=allow-oom
-- Gives the id back at a clean exit. KEYS: heartbeat, workers set, in-flight hash, recorded
-- marker. ARGV: id, token. With nothing left in flight the id is given back at once; otherwise
-- the heartbeat is left to expire so that another worker requeues what is left.
-- include ours_fn.lua
if not ours(KEYS[1], ARGV[2]) then return 0 end
local t = redis.call('TYPE', KEYS[3]).ok
if t == 'hash' and redis.call('HLEN', KEYS[3]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
