#!lua
-- Takes up to n tasks from the queues, highest priority first, into this worker's in-flight
-- hash, in one step: a task is always in exactly one place.
-- KEYS: in-flight hash, dead list, dead payloads hash, stats hash, paused set, queue 1..N.
-- ARGV: n, max_payload, max_bytes, worker, rate limits ('' when none: see rate_fn.lua), then
-- n task ids.
-- Returns {examined, nbad, nlarge, (queue index, error) * nbad,
--          (queue index, ref, length) * nlarge, (queue index, payload) * got}:
-- queue indexes count from 0; examined is how many queues it looked at (the first ones, in
-- order); a queue that is not a list is reported and skipped, never touched, so that the others
-- are still served; so is a queue named in the paused set (qworkerctl pause), with the error
-- 'PAUSED': every worker honours it from its next fetch on; so is one whose next task waits
-- for its handler's rate limit, with 'THROTTLED <ms until the next token> <handler>': it stays
-- at the head of its queue (first in, first out), and the queues after it are served.
-- A payload over max_payload never leaves Redis: it is kept whole in the dead payloads hash
-- under ref (an id taken from the end of ARGV), with a dead letter naming it, and is counted
-- dead. Encoding it into the letter (base64 for bytes that are not UTF-8) would keep Redis busy
-- for seconds per 100 MB; a copy takes milliseconds.
-- The payloads handed out (and the too large ones, whose copy costs Redis as much) stop at
-- max_bytes (the first one always goes): what was popped past it goes back to the right end, in
-- its order.
-- Declared without flags: Redis refuses the whole call under maxmemory (OOM), before anything
-- moved.
-- include rate_fn.lua
local IDS = 5 -- the ids follow ARGV[IDS]
local want = {'hash', 'list', 'hash', 'hash', 'set'}
for i = 1, 5 do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= want[i] and t ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. t .. ', not a ' .. want[i])
  end
end
local n, max_payload, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bad, large, out = {}, {}, {}
local got, nlarge, examined, bytes = 0, 0, 0, 0
local full = false
local clock = redis.call('TIME')
local now = tonumber(clock[1])
local limits = nil
if ARGV[5] ~= '' then
  limits = rate.new(ARGV[5], now * 1e6 + tonumber(clock[2]))
  local err = rate.check(limits)
  if err then return redis.error_reply(err) end
end

local function dead_letter(qname, p)
  local ref = ARGV[IDS + n - nlarge]
  nlarge = nlarge + 1
  redis.call('HSET', KEYS[3], ref, p)
  redis.call('LPUSH', KEYS[2], cjson.encode({
    reason = 'too_large', length = #p, max_payload = max_payload, queue = qname,
    payload_ref = ref, time = now, worker = ARGV[4]}))
  for _, what in ipairs({'processed', 'failed', 'dead'}) do
    redis.call('HINCRBY', KEYS[4], what, 1)
    redis.call('HINCRBY', KEYS[4], 'queue:' .. qname .. ':' .. what, 1)
  end
  return ref
end

-- Pops in chunks of 1, 2, 4... up to CHUNK: Redis cannot tell an element's size without
-- copying it, so a head of huge payloads is found after copying a few of them, not a batch.
local CHUNK = 16
local chunk = 1
local paused = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[5])) do paused[name] = true end
for q = 6, #KEYS do
  if got + nlarge >= n or full then break end
  examined = examined + 1
  local prefix = KEYS[q] .. '\0'
  local args = {}
  if paused[KEYS[q]] then
    bad[#bad + 1] = q - 6
    bad[#bad + 1] = 'PAUSED ' .. KEYS[q] .. ' is paused'
  end
  local throttled = false
  while got + nlarge < n and not full and not throttled and not paused[KEYS[q]] do
    local want = math.min(chunk, n - got - nlarge)
    local items = redis.pcall('RPOP', KEYS[q], want)
    if type(items) == 'table' and items.err then
      bad[#bad + 1] = q - 6
      bad[#bad + 1] = items.err
      break
    end
    if not items then break end
    chunk = math.min(chunk * 2, CHUNK)
    for k, p in ipairs(items) do
      local wait, h = 0, nil
      if got + nlarge > 0 and bytes + #p > max_bytes then
        full = true
      elseif limits and #p <= max_payload then
        h = rate.handler_of(limits, p, KEYS[q])
        wait = rate.take(limits, h)
        throttled = wait > 0
      end
      if full or throttled then
        -- Back at the right end, the first popped rightmost: the queue is as it was.
        for j = #items, k, -1 do redis.call('RPUSH', KEYS[q], items[j]) end
        if throttled then
          bad[#bad + 1] = q - 6
          bad[#bad + 1] = 'THROTTLED ' .. wait .. ' ' .. h
        end
        break
      end
      bytes = bytes + #p -- a payload too large costs Redis its copy too
      if #p > max_payload then
        large[#large + 1] = q - 6
        large[#large + 1] = dead_letter(KEYS[q], p)
        large[#large + 1] = #p
      else
        got = got + 1
        args[#args + 1] = ARGV[IDS + got]
        args[#args + 1] = prefix .. p
        out[#out + 1] = q - 6
        out[#out + 1] = p
        -- One HSET per 1,000 tasks, not per task: a third less of Redis's time; unpack() stays
        -- far below Lua's C stack limit.
        if #args >= 2000 then
          redis.call('HSET', KEYS[1], unpack(args))
          args = {}
        end
      end
    end
    if #items < want then break end -- the queue ran out
  end
  if #args > 0 then redis.call('HSET', KEYS[1], unpack(args)) end
end
if limits then rate.save(limits) end
local reply = {examined, #bad / 2, nlarge}
for _, v in ipairs(bad) do reply[#reply + 1] = v end
for _, v in ipairs(large) do reply[#reply + 1] = v end
for _, v in ipairs(out) do reply[#reply + 1] = v end
return reply
