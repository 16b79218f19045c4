-- Rate limits per handler, shared by every worker on this Redis (included by fetch.lua).
-- A token bucket per limited handler in the hash <prefix>:rate:<handler> (fields tokens, at:
-- Redis's clock in microseconds), refilled at `rate` tokens a second up to `burst`; a task of
-- that handler is taken only with a token, so that what the fleet starts stays within the limit
-- whatever the number of workers. The key expires once the bucket would be full again: an
-- absent key is a full bucket.
-- spec (ARGV, JSON made by src/fetch_script.c): {"k": key prefix, "h": {handler: [rate,
-- burst]}, "q": {queue: its default handler}}.
local rate = {}

function rate.new(spec, now_us)
  local s = cjson.decode(spec)
  s.buckets, s.now_us = {}, now_us
  return s
end

local bucket

-- Refused before anything moves (Lua does not roll back): a bucket key of another type, or one
-- the ACL keeps from us. Every bucket is read now, so that nothing can fail once tasks are
-- popped.
function rate.check(s)
  for h in pairs(s.h) do
    local key = s.k .. h
    if not (redis.acl_check_cmd('TYPE', key) and redis.acl_check_cmd('HMGET', key, 'tokens', 'at')
            and redis.acl_check_cmd('HSET', key, 'tokens', '0', 'at', '0')
            and redis.acl_check_cmd('PEXPIRE', key, '1')) then
      return 'NOPERM this user may not read and write ' .. key .. ' (TYPE, HMGET, HSET, PEXPIRE)'
    end
    local t = redis.call('TYPE', key).ok
    if t ~= 'hash' and t ~= 'none' then
      return 'WRONGTYPE ' .. key .. ' is a ' .. t .. ', not a hash'
    end
    bucket(s, h)
  end
  return nil
end

-- The handler a payload runs under, as src/envelope.c decides it, or nil when taking it starts
-- nothing of a handler: a delayed envelope goes to the schedule, and a payload qworker will
-- refuse costs no token. Wrappers (retries, recoveries, dead letters moved back) are opened.
function rate.handler_of(s, p, queue)
  local ready = false
  for _ = 1, 8 do
    if not string.find(p, '^[ \t\r\n]*{') then return s.q[queue] end
    local ok, o = pcall(cjson.decode, p)
    if not ok or type(o) ~= 'table' then return nil end
    if o.payload == nil and o.payload_base64 == nil then
      if not ready and type(o.delay) == 'number' and o.delay > 0 then return nil end
      return type(o.handler) == 'string' and o.handler or nil
    end
    -- base64: bytes that are no envelope, a plain payload of the queue's handler
    if type(o.payload) ~= 'string' then return s.q[queue] end
    ready = ready or o.ready == true
    p = o.payload
  end
  return nil
end

function bucket(s, h)
  local b = s.buckets[h]
  if b ~= nil then return b end
  local l = s.h[h]
  if l == nil then return nil end
  local st = redis.call('HMGET', s.k .. h, 'tokens', 'at')
  local tokens, at = tonumber(st[1]), tonumber(st[2])
  if tokens == nil or at == nil then
    tokens = l[2]
  else
    tokens = math.min(l[2], tokens + math.max(0, s.now_us - at) * l[1] / 1e6)
  end
  b = {tokens = tokens, rate = l[1], burst = l[2], used = false}
  s.buckets[h] = b
  return b
end

-- 0 if a task of handler h may be taken now (its token is spent), else the milliseconds until
-- the next token.
function rate.take(s, h)
  local b = h and bucket(s, h)
  if b == nil then return 0 end
  if b.tokens >= 1 then
    b.tokens = b.tokens - 1
    b.used = true
    return 0
  end
  return math.max(1, math.ceil((1 - b.tokens) / b.rate * 1000))
end

function rate.save(s)
  for h, b in pairs(s.buckets) do
    if b.used then
      local key = s.k .. h
      redis.call('HSET', key, 'tokens', string.format('%.6f', b.tokens),
                 'at', string.format('%.0f', s.now_us))
      redis.call('PEXPIRE', key, math.ceil((b.burst - b.tokens) / b.rate * 1000) + 1000)
    end
  end
end
