#!lua
-- Pushes one tick of a schedule, once whichever worker runs it first: the tick (unix seconds)
-- is kept in the schedule's key, and a tick not later than the one kept is not pushed again.
-- KEYS: the schedule's key, its queue. ARGV: tick, payload, "catch-up" or "" (a tick found
-- missed at a start: a schedule with no key yet only notes it, so that a new schedule does not
-- fire the moment it is added). Returns 1 if pushed, 0 if not, 2 if noted as a new schedule's
-- first tick (not pushed), -1 if the tick is in the future.
-- Declared without flags: Redis refuses it whole under maxmemory, before anything is written.
-- include requeue_fn.lua
local refused = check_types({KEYS[1], 'string', KEYS[2], 'list'})
if refused then return refused end
local tick = tonumber(ARGV[1])
-- A worker whose clock runs ahead would push ticks early and keep the others from pushing
-- until their clocks reach its own: its ticks are refused (-1) past a minute ahead of Redis's.
if tick > tonumber(redis.call('TIME')[1]) + 60 then return -1 end
local last = tonumber(redis.call('GET', KEYS[1]) or '')
if last ~= nil and last >= tick then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
if last == nil and ARGV[3] == 'catch-up' then return 2 end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
