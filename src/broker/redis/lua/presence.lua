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


-- Counting presence (SPEC 16.5): per node, not per viewer, under the channel's slot.
--   <base>:pc          hash node -> its connections
--   <base>:pcx         sorted set node -> expiry ms (a crashed node's report goes)
--   <base>:pch:<node>  HyperLogLog of the node's users
--   <base>:pcs:<node>  JSON array: a sample of the node's entries
local function count_forget(base, node)
  redis.call('HDEL', base .. ':pc', node)
  redis.call('ZREM', base .. ':pcx', node)
  redis.call('DEL', base .. ':pch:' .. node, base .. ':pcs:' .. node)
end

--   FCALL switchyard_count 1 <prefix>:{<channel>} <node> <count> <ttl_ms> <now_ms> <r|a> <sample> [<user>...]
-- r: the users replace the node's; a: they are added. Count 0 removes the report.
local function count_report(keys, args)
  local base, node = keys[1], args[1]
  local count, ttl, now = tonumber(args[2]) or 0, tonumber(args[3]) or 60000, tonumber(args[4]) or 0
  if count <= 0 then
    count_forget(base, node)
    return 0
  end
  local hll = base .. ':pch:' .. node
  if args[5] == 'r' then
    redis.call('DEL', hll)
  end
  for i = 7, #args, 1000 do
    redis.call('PFADD', hll, unpack(args, i, math.min(i + 999, #args)))
  end
  redis.call('HSET', base .. ':pc', node, count)
  redis.call('ZADD', base .. ':pcx', now + ttl, node)
  redis.call('SET', base .. ':pcs:' .. node, args[6], 'PX', ttl)
  for _, k in ipairs({base .. ':pc', base .. ':pcx', hll}) do
    redis.call('PEXPIRE', k, ttl)
  end
  return 1
end

--   FCALL switchyard_counts 1 <prefix>:{<channel>} <now_ms>
-- returns {count, users, sample...}: the sum of the live nodes' counts, the size of
-- the union of their users, and their samples.
local function counts(keys, args)
  local base, now = keys[1], tonumber(args[1]) or 0
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', base .. ':pcx', '-inf', now)) do
    count_forget(base, node)
  end
  local nodes = redis.call('ZRANGE', base .. ':pcx', 0, -1)
  local count, hlls = 0, {}
  for _, node in ipairs(nodes) do
    count = count + (tonumber(redis.call('HGET', base .. ':pc', node)) or 0)
    hlls[#hlls + 1] = base .. ':pch:' .. node
  end
  local users = 0
  if #hlls > 0 then
    users = redis.call('PFCOUNT', unpack(hlls))
  end
  local out = {count, users}
  for _, node in ipairs(nodes) do
    local s = redis.call('GET', base .. ':pcs:' .. node)
    if s then
      out[#out + 1] = s
    end
  end
  return out
end
