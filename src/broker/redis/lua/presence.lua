-- Presence (SPEC 5.5): KEYS[1] = <prefix>:{<channel>}:presence (conn -> "<n>:<who><info>"),
-- KEYS[2] = ...:presence_exp (conn -> expiry ms), KEYS[3] = ...:presence_users (who -> count).
-- Every key expires with the entries, so a crashed node leaves nothing behind.
local function presence_unset(keys, conn)
  local v = redis.call('HGET', keys[1], conn)
  if not v then
    redis.call('ZREM', keys[2], conn)
    return 0
  end
  local n = tonumber(string.match(v, '^(%d+):'))
  local who = string.sub(v, string.len(tostring(n)) + 2, string.len(tostring(n)) + 1 + n)
  redis.call('HDEL', keys[1], conn)
  redis.call('ZREM', keys[2], conn)
  if redis.call('HINCRBY', keys[3], who, -1) <= 0 then
    redis.call('HDEL', keys[3], who)
  end
  return 1
end

--   FCALL switchyard_presence_add 3 <keys> <expiry_ms> <ttl_ms> <conn> <who> <info> [<conn> <who> <info>...]
local function presence_add(keys, args)
  local exp, ttl = args[1], tonumber(args[2])
  for i = 3, #args, 3 do
    local conn, who, info = args[i], args[i + 1], args[i + 2]
    if redis.call('HEXISTS', keys[1], conn) == 0 then
      redis.call('HINCRBY', keys[3], who, 1)
    end
    redis.call('HSET', keys[1], conn, string.len(who) .. ':' .. who .. info)
    redis.call('ZADD', keys[2], exp, conn)
  end
  for _, k in ipairs(keys) do
    redis.call('PEXPIRE', k, ttl)
  end
  return 1
end

--   FCALL switchyard_presence_remove 3 <keys> <conn>...
local function presence_remove(keys, args)
  local n = 0
  for _, conn in ipairs(args) do
    n = n + presence_unset(keys, conn)
  end
  return n
end

--   FCALL switchyard_presence 3 <keys> <now_ms> <limit>
-- returns {count, users, conn, info, conn, info...} with at most <limit> entries,
-- after dropping (a bounded number of) expired ones.
local function presence_get(keys, args)
  local now, limit = args[1], tonumber(args[2]) or 1000
  local expired = redis.call('ZRANGEBYSCORE', keys[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, conn in ipairs(expired) do
    presence_unset(keys, conn)
  end
  local out = {redis.call('HLEN', keys[1]), redis.call('HLEN', keys[3])}
  local cursor = '0'
  local taken = 0
  repeat
    local page = redis.call('HSCAN', keys[1], cursor, 'COUNT', math.max(10, limit))
    cursor = page[1]
    local kv = page[2]
    for i = 1, #kv, 2 do
      if taken >= limit then
        break
      end
      local v = kv[i + 1]
      local n = tonumber(string.match(v, '^(%d+):'))
      out[#out + 1] = kv[i]
      out[#out + 1] = string.sub(v, string.len(tostring(n)) + 2 + n)
      taken = taken + 1
    end
  until cursor == '0' or taken >= limit
  return out
end

