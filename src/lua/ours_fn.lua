-- Whether the heartbeat at key belongs to token (or is gone).
local function ours(key, token)
  local cur = redis.call('GET', key)
  if not cur then return true end
  local ok, hb = pcall(cjson.decode, cur)
  return ok and type(hb) == 'table' and hb.token == token
end
