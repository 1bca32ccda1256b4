-- State channels (SPEC 16.1-16.2): the newest publication of every key, with offsets
-- from the channel's meta (shared with history), tombstones for deleted and expired
-- keys, and snapshots of everything or of what changed after an offset.
--
--   <key>:state  hash key -> stored envelope (live keys)
--   <key>:tomb   hash key -> stored tombstone envelope
--   <key>:sidx   sorted set key -> offset of its newest change (live and tombstones)
--   <key>:sexp   sorted set key -> expiry in ms (live keys with a state_ttl, tombstones)
--   <key>:meta   epoch, top, and tfloor: tombstones at or below it may be gone
--
-- A change is stored and published as one step; a snapshot is read as one step.

local TOMB_MAX_MS = 86400000

-- A state key: the characters of a channel name's rest, 1 to 200 of them.
local function bad_key(k)
  return type(k) ~= 'string' or string.len(k) < 1 or string.len(k) > 200
    or not string.match(k, '^[A-Za-z0-9_.:@=-]+$')
end

local function epoch_of(base, sec, usec)
  local meta = base .. ':meta'
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = string.format('%x%05x', sec, usec)
    redis.call('HSET', meta, 'epoch', epoch)
    redis.call('DEL', base .. ':history', base .. ':state', base .. ':tomb', base .. ':sidx', base .. ':sexp')
  end
  return epoch
end

-- Stores a change of `k` (a tombstone when `deleted`) under the next offset, and
-- publishes it. `envelope` is the JSON to store, without the server's fields.
local function change(base, k, envelope, deleted, ttl_ms, now_ms, sec, usec)
  local epoch = epoch_of(base, sec, usec)
  local offset = redis.call('HINCRBY', base .. ':meta', 'top', 1)
  local id = string.format('%x%05x', sec, usec)
  local full = splice('"offset":' .. offset .. ',"epoch":"' .. epoch .. '","i":"' .. id .. '","h":1', envelope)
  if deleted then
    redis.call('HDEL', base .. ':state', k)
    redis.call('HSET', base .. ':tomb', k, full)
    local keep = TOMB_MAX_MS
    if ttl_ms > 0 and ttl_ms < keep then
      keep = ttl_ms
    end
    redis.call('ZADD', base .. ':sexp', now_ms + keep, k)
  else
    redis.call('HDEL', base .. ':tomb', k)
    redis.call('HSET', base .. ':state', k, full)
    if ttl_ms > 0 then
      redis.call('ZADD', base .. ':sexp', now_ms + ttl_ms, k)
    else
      redis.call('ZREM', base .. ':sexp', k)
    end
  end
  redis.call('ZADD', base .. ':sidx', offset, k)
  redis.call('__PUBLISH__', base, full)
  return offset, epoch
end

-- Expires (a bounded number of) keys: a live key past its state_ttl becomes a
-- tombstone (published, so subscribers drop it); a tombstone past its time goes, and
-- the tombstone floor rises to its offset.
local function expire_state(base, ttl_ms, now_ms, sec, usec)
  local due = redis.call('ZRANGEBYSCORE', base .. ':sexp', '-inf', now_ms, 'LIMIT', 0, 200)
  for _, k in ipairs(due) do
    local live = redis.call('HGET', base .. ':state', k)
    if live then
      local ok, env = pcall(cjson.decode, live)
      local ty = 'expired'
      if ok and type(env) == 'table' and type(env.type) == 'string' then
        ty = env.type
      end
      local tomb = cjson.encode({type = ty, key = k, delete = true})
      change(base, k, tomb, true, ttl_ms, now_ms, sec, usec)
    else
      local off = redis.call('ZSCORE', base .. ':sidx', k)
      redis.call('HDEL', base .. ':tomb', k)
      redis.call('ZREM', base .. ':sidx', k)
      redis.call('ZREM', base .. ':sexp', k)
      if off then
        local floor = tonumber(redis.call('HGET', base .. ':meta', 'tfloor') or '0')
        if tonumber(off) > floor then
          redis.call('HSET', base .. ':meta', 'tfloor', off)
        end
      end
    end
  end
end

--   FCALL switchyard_set 1 <prefix>:{<channel>} <envelope-json-with-key> <state_max_keys> <state_ttl_seconds> [<idempotency_key> <window_seconds>]
-- returns {offset, epoch} (a third element 1: the idempotency key was seen). The
-- envelope needs a "key"; "delete": true removes it.
local function set(keys, args)
  local base = keys[1]
  local envelope = args[1]
  local max_keys = tonumber(args[2]) or 10000
  local ttl_ms = (tonumber(args[3]) or 0) * 1000
  local idem, window = args[4], args[5]
  local bad, env = invalid(envelope)
  if bad then
    return fail(bad)
  end
  if bad_key(env.key) then
    return fail('a state channel publication needs a "key" of 1 to 200 of [A-Za-z0-9_.:@=-]')
  end
  local deleted = env.delete == true
  if env.delete ~= nil and type(env.delete) ~= 'boolean' then
    return fail('"delete" must be a boolean')
  end
  local dup = seen(base, idem)
  if dup then
    return dup
  end
  local sec, usec = now_parts()
  local now_ms = sec * 1000 + math.floor(usec / 1000)
  expire_state(base, ttl_ms, now_ms, sec, usec)
  if not deleted and redis.call('HEXISTS', base .. ':state', env.key) == 0
    and redis.call('HLEN', base .. ':state') >= max_keys then
    return fail('limit: the channel already holds state_max_keys (' .. max_keys .. ') keys')
  end
  local offset, epoch = change(base, env.key, envelope, deleted, ttl_ms, now_ms, sec, usec)
  remember(base, idem, window, offset, epoch)
  return {offset, epoch, 0}
end

--   FCALL switchyard_state 1 <prefix>:{<channel>} <since|-1> <state_ttl_seconds> [<key>...]
-- returns {epoch, top, tfloor, partial 0|1, envelope...}: with since >= the tombstone
-- floor, the changes after since (tombstones included, ascending); else every live
-- key (ascending). Named keys narrow either.
local function state(keys, args)
  local base = keys[1]
  local since = tonumber(args[1]) or -1
  local ttl_ms = (tonumber(args[2]) or 0) * 1000
  local epoch = redis.call('HGET', base .. ':meta', 'epoch')
  if not epoch then
    return {'', 0, 0, 0}
  end
  local sec, usec = now_parts()
  expire_state(base, ttl_ms, sec * 1000 + math.floor(usec / 1000), sec, usec)
  local top = tonumber(redis.call('HGET', base .. ':meta', 'top') or '0')
  local floor = tonumber(redis.call('HGET', base .. ':meta', 'tfloor') or '0')
  local partial = since >= 0 and since >= floor and since <= top
  local wanted = nil
  if #args > 2 then
    wanted = {}
    for i = 3, #args do
      wanted[args[i]] = true
    end
  end
  local out = {epoch, top, floor, partial and 1 or 0}
  local listed
  if partial then
    listed = redis.call('ZRANGEBYSCORE', base .. ':sidx', '(' .. since, '+inf')
  else
    listed = redis.call('ZRANGE', base .. ':sidx', 0, -1)
  end
  for _, k in ipairs(listed) do
    if wanted == nil or wanted[k] then
      local v = redis.call('HGET', base .. ':state', k)
      if not v and partial then
        v = redis.call('HGET', base .. ':tomb', k)
      end
      if v then
        out[#out + 1] = v
      end
    end
  end
  return out
end
