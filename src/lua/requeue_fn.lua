-- Shared by requeue.lua and reap.lua (included where they say "-- include requeue_fn.lua").
-- An in-flight entry is "<queue>\0<payload>": queue names cannot hold NUL, payloads can.
-- Entries go back a chunk per call, so that a worker that died with a million tasks in flight
-- does not hold Redis in one script for seconds; each entry still moves exactly once. A task put
-- back because its worker died carries how many times that has happened in a wrapper
-- ({"payload" or "payload_base64", "recoveries", ...}, as for retries: see src/wire.c), so that
-- it goes to the dead list as poison after max_recoveries instead of killing worker after
-- worker. A payload goes as base64 unless it is text jansson takes back (UTF-8, no NUL).
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = string.byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64,
               n % 64}
    out[#out + 1] = string.sub(B64, q[1] + 1, q[1] + 1)
      .. string.sub(B64, q[2] + 1, q[2] + 1)
      .. (b and string.sub(B64, q[3] + 1, q[3] + 1) or '=')
      .. (c and string.sub(B64, q[4] + 1, q[4] + 1) or '=')
  end
  return table.concat(out)
end
local function textual(s)
  if not string.find(s, '[%z\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    if c == 0 then return false end
    if c < 128 then
      i = i + 1
    else
      local len, lo, hi = 0, 128, 191
      if c >= 194 and c <= 223 then len = 2
      elseif c >= 224 and c <= 239 then len = 3
        if c == 224 then lo = 160 elseif c == 237 then hi = 159 end
      elseif c >= 240 and c <= 244 then len = 4
        if c == 240 then lo = 144 elseif c == 244 then hi = 143 end
      else return false end
      local d = string.byte(s, i + 1)
      if not d or d < lo or d > hi then return false end
      for j = i + 2, i + len - 1 do
        d = string.byte(s, j)
        if not d or d < 128 or d > 191 then return false end
      end
      i = i + len
    end
  end
  return true
end
local function recovered(p)
  if string.sub(p, 1, 1) == '{' then
    local ok, w = pcall(cjson.decode, p)
    if ok and type(w) == 'table' and (w.payload ~= nil or w.payload_base64 ~= nil) then
      w.recoveries = (tonumber(w.recoveries) or 0) + 1
      return cjson.encode(w)
    end
  end
  if textual(p) then return '{"payload":' .. cjson.encode(p) .. ',"recoveries":1}' end
  return '{"payload_base64":"' .. b64(p) .. '","recoveries":1}'
end
local function payload_field(o, p)
  if textual(p) then o.payload = p else o.payload_base64 = b64(p) end
  return o
end
-- A dead letter written by a script (see src/wire.c for the one the reporter writes).
local function dead_letter(p, id, q, reason)
  local o = payload_field({id = id, queue = q, reason = reason,
                           time = tonumber(redis.call('TIME')[1])}, p)
  return cjson.encode(o)
end
-- Whether key is of type want, or absent.
local function usable(key, want)
  local t = redis.call('TYPE', key).ok
  return t == want or t == 'none', t
end
-- Refuses the whole call, before anything is written, when a key it writes to is of the wrong
-- type: Lua does not roll back what a script did before it failed.
local function check_types(pairs_of)
  for i = 1, #pairs_of, 2 do
    local ok, t = usable(pairs_of[i], pairs_of[i + 1])
    if not ok then
      return redis.error_reply('WRONGTYPE ' .. pairs_of[i] .. ' is a ' .. t .. ', not a ' ..
                               pairs_of[i + 1])
    end
  end
  return nil
end
-- An entry whose queue is not a list now (someone replaced the key) goes to the dead list with
-- the reason wrong_type rather than being lost or blocking the rest.
local function requeue_some(hash, n, dead)
  local some = redis.call('HRANDFIELD', hash, n, 'WITHVALUES')
  local done = {}
  for i = 1, #some, 2 do
    local v = some[i + 1]
    local z = string.find(v, '\0', 1, true)
    if z and usable(string.sub(v, 1, z - 1), 'list') then
      redis.call('RPUSH', string.sub(v, 1, z - 1), recovered(string.sub(v, z + 1)))
    else
      redis.call('LPUSH', dead, dead_letter(z and string.sub(v, z + 1) or v, some[i],
                                            z and string.sub(v, 1, z - 1) or '', 'wrong_type'))
    end
    done[#done + 1] = some[i]
  end
  if #done > 0 then redis.call('HDEL', hash, unpack(done)) end
  return #done
end
