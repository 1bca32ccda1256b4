#!lua name=switchyard
-- The Redis side of switchyard (SPEC 8, 15-17), loaded by every node at start and
-- again whenever Redis answers that it is missing (FUNCTION LOAD REPLACE). Every
-- decision that must hold cluster-wide is made here, atomically: offsets, epochs and
-- entry ids, idempotency, presence, and the transitions of the user registry.
--
--   FCALL switchyard_publish 1 <prefix>:{<channel>} <envelope-json> <history_size> <history_ttl_seconds> [<idempotency_key> <window_seconds>]
--
-- returns {offset, epoch} ({0, ""} without history), with a third element 1 when the
-- idempotency key was seen within its window (nothing published again). KEYS[1] is
-- also the pub/sub channel; the history stream (<key>:history), its meta hash
-- (<key>:meta: epoch, top) and idempotency keys share its hash tag, so they live in
-- the same Redis Cluster slot. The stored and published envelope is the service's
-- text with "offset", "epoch", "i" (the entry's id) and "h" spliced in front: the
-- payload is never re-encoded, so big numbers and key order survive.

local RESERVED = {__RESERVED__}

local function fail(msg)
  return redis.error_reply('ERR switchyard: ' .. msg)
end

-- Checks an envelope written by a service or a node (SPEC 8.1, 8.2). Returns nil when
-- it is fine, else the reason.
local function invalid(envelope)
  if type(envelope) ~= 'string' or not string.match(envelope, '^%s*{') then
    return 'the envelope must be a JSON object'
  end
  local ok, env = pcall(cjson.decode, envelope)
  if not ok or type(env) ~= 'table' then
    return 'the envelope is not valid JSON'
  end
  if type(env.type) ~= 'string' or env.type == '' then
    return 'the envelope needs a non-empty string "type"'
  end
  if RESERVED[env.type] then
    return '"' .. env.type .. '" is a reserved type'
  end
  for _, f in ipairs({'offset', 'epoch', 'channel', 'h', 'i'}) do
    if env[f] ~= nil then
      return 'the envelope may not carry "' .. f .. '": the server sets it'
    end
  end
  -- "from" is stamped by nodes (which mark their envelopes with "n"), never given.
  if env.from ~= nil and env.n == nil then
    return 'the envelope may not carry "from": the server sets it'
  end
  return nil
end

local function now_parts()
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[2])
end

-- Splices fields in front of a JSON object's own.
local function splice(prefix, envelope)
  local rest = string.gsub(envelope, '^%s*{', '', 1)
  local sep = ','
  if string.match(rest, '^%s*}') then
    sep = ''
  end
  return '{' .. prefix .. sep .. rest
end

-- An idempotency key seen within its window answers what the first call stored.
local function seen(key, idem)
  if idem == nil or idem == '' then
    return nil
  end
  local first = redis.call('GET', key .. ':idem:' .. idem)
  if not first then
    return nil
  end
  local offset, epoch = string.match(first, '^(%d+)|(.*)$')
  return {tonumber(offset), epoch, 1}
end

local function remember(key, idem, window, offset, epoch)
  if idem ~= nil and idem ~= '' then
    redis.call('SET', key .. ':idem:' .. idem, offset .. '|' .. epoch, 'EX', math.max(1, tonumber(window) or 300))
  end
end

local function publish(keys, args)
  local key = keys[1]
  local envelope = args[1]
  local size = tonumber(args[2]) or 0
  local ttl = tonumber(args[3]) or 0
  local idem, window = args[4], args[5]
  local bad = invalid(envelope)
  if bad then
    return fail(bad)
  end
  local dup = seen(key, idem)
  if dup then
    return dup
  end
  if size <= 0 or ttl <= 0 then
    redis.call('__PUBLISH__', key, envelope)
    remember(key, idem, window, 0, '')
    return {0, '', 0}
  end
  local meta = key .. ':meta'
  local history = key .. ':history'
  local sec, usec = now_parts()
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = string.format('%x%05x', sec, usec)
    redis.call('HSET', meta, 'epoch', epoch)
    -- A new epoch starts an empty history: entries of a lost meta are void.
    redis.call('DEL', history)
  end
  local offset = redis.call('HINCRBY', meta, 'top', 1)
  -- The entry's id: an offset reused after a failover comes with another one.
  local id = string.format('%x%05x', sec, usec)
  local full = splice('"offset":' .. offset .. ',"epoch":"' .. epoch .. '","i":"' .. id .. '","h":1', envelope)
  redis.call('XADD', history, 'MAXLEN', size, offset .. '-1', 'd', full)
  redis.call('EXPIRE', history, ttl)
  -- The epoch outlives the publications by a day: an idle channel whose history
  -- expired keeps its offsets, and clients learn recovered=false from the gap.
  redis.call('EXPIRE', meta, ttl + 86400)
  redis.call('__PUBLISH__', key, full)
  remember(key, idem, window, offset, epoch)
  return {offset, epoch, 0}
end

-- The nodes' atomic history read; it never creates anything:
--   FCALL switchyard_history 1 <prefix>:{<channel>} <since|-1> <limit|0>
-- returns {epoch, top, entries} (epoch "" and top 0 for a channel without history);
-- entries have an offset above <since>, or are the newest <limit>, or all.
local function history(keys, args)
  local key = keys[1]
  local meta = key .. ':meta'
  local hist = key .. ':history'
  local since = tonumber(args[1]) or -1
  local limit = tonumber(args[2]) or 0
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    return {'', 0, {}}
  end
  local top = tonumber(redis.call('HGET', meta, 'top') or '0')
  local entries
  if since >= 0 then
    entries = redis.call('XRANGE', hist, '(' .. since .. '-1', '+')
  elseif limit > 0 then
    entries = redis.call('XREVRANGE', hist, '+', '-', 'COUNT', limit)
    local n = #entries
    for i = 1, math.floor(n / 2) do
      entries[i], entries[n - i + 1] = entries[n - i + 1], entries[i]
    end
  else
    entries = redis.call('XRANGE', hist, '-', '+')
  end
  return {epoch, top, entries}
end

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

-- The user registry (SPEC 5.7, 17): KEYS[1] = <prefix>:who:{<who>}, a sorted set of
-- "<node>|<conn>" by registration time; optional KEYS[2] = the events stream and
-- KEYS[3] = the set of who keys online anywhere (one Redis: the transition and its
-- record are one atomic step; a Redis Cluster passes neither and the node records
-- what this decided).
local function record(keys, on, who, event, fields)
  if #keys < 3 then
    return
  end
  if on then
    redis.call('SADD', keys[3], who)
  else
    redis.call('SREM', keys[3], who)
  end
  -- fields: maxlen (0: this event is not emitted), user_id, session_id, conn_id,
  -- node, ts, data.
  local maxlen = tonumber(fields[1]) or 0
  if maxlen > 0 then
    redis.call('XADD', keys[2], 'MAXLEN', '~', maxlen, '*', 'event', event, 'channel', '',
      'user_id', fields[2], 'session_id', fields[3], 'conn_id', fields[4], 'node', fields[5],
      'ts', fields[6], 'data', fields[7])
  end
end

--   FCALL switchyard_user_connect 1|3 <keys> <member> <who> <maxlen> <user_id> <session_id> <conn_id> <node> <ts> <data>
-- returns {online_transition, member, member...} in registration order.
local function user_connect(keys, args)
  local key, member, who = keys[1], args[1], args[2]
  local first = redis.call('ZCARD', key) == 0
  local sec, usec = now_parts()
  redis.call('ZADD', key, 'NX', sec * 1000000 + usec, member)
  if first then
    record(keys, true, who, 'user_online', {args[3], args[4], args[5], args[6], args[7], args[8], args[9]})
  end
  local out = {first and 1 or 0}
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    out[#out + 1] = m
  end
  return out
end

--   FCALL switchyard_user_disconnect 1|3 <keys> <who> <maxlen> <user_id> <session_id> <conn_id> <node> <ts> <data> <member>...
-- removes the members; returns {offline_transition, members of <node> left}.
local function user_disconnect(keys, args)
  local key, who, node = keys[1], args[1], args[6]
  local removed = 0
  for i = 9, #args do
    removed = removed + redis.call('ZREM', key, args[i])
  end
  local left = redis.call('ZCARD', key)
  local offline = removed > 0 and left == 0
  if offline then
    record(keys, false, who, 'user_offline', {args[2], args[3], args[4], args[5], args[6], args[7], args[8]})
  end
  local mine = 0
  local prefix = node .. '|'
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if string.sub(m, 1, string.len(prefix)) == prefix then
      mine = mine + 1
    end
  end
  return {offline and 1 or 0, mine}
end

--   FCALL switchyard_user_reap 1|3 <keys> <who> <maxlen> <user_id> <session_id> <node> <ts>
-- removes every member of a dead <node>; returns {offline_transition}.
local function user_reap(keys, args)
  local key, who, node = keys[1], args[1], args[5]
  local prefix = node .. '|'
  local removed = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if string.sub(m, 1, string.len(prefix)) == prefix then
      removed = removed + redis.call('ZREM', key, m)
    end
  end
  local offline = removed > 0 and redis.call('ZCARD', key) == 0
  if offline then
    record(keys, false, who, 'user_offline', {args[2], args[3], args[4], '', node, args[6], '{}'})
  end
  return {offline and 1 or 0}
end

-- Channel occupancy (SPEC 4 "reads never create state", 17): KEYS[1] = the channel's
-- key, whose <key>:nodes holds the nodes with local subscribers; optional KEYS[2] =
-- the events stream (one Redis: the transition is recorded in the same step).
local function channel_event(keys, event, node, fields)
  -- fields: maxlen (0: not emitted), ts, channel
  local maxlen = tonumber(fields[1]) or 0
  if #keys >= 2 and maxlen > 0 then
    redis.call('XADD', keys[2], 'MAXLEN', '~', maxlen, '*', 'event', event, 'channel', fields[3],
      'user_id', '', 'session_id', '', 'conn_id', '', 'node', node, 'ts', fields[2],
      'data', cjson.encode({channel = fields[3]}))
  end
end

--   FCALL switchyard_occupy 1|2 <keys> <node> <numbered 0|1> <new-epoch> <maxlen> <ts> <channel>
-- returns {occupied_transition, epoch}: the first node with subscribers anywhere
-- makes the channel occupied; a numbered channel gets its epoch now, so subscribers
-- and the first publication agree on it. Both go again when the channel is vacated
-- with nothing published (switchyard_vacate): nothing outlives the subscribers.
local function occupy(keys, args)
  local base, node = keys[1], args[1]
  local nodes = base .. ':nodes'
  local first = redis.call('SCARD', nodes) == 0
  local added = redis.call('SADD', nodes, node) == 1
  local epoch = ''
  if args[2] == '1' then
    local meta = base .. ':meta'
    epoch = redis.call('HGET', meta, 'epoch')
    if not epoch then
      epoch = args[3]
      redis.call('HSET', meta, 'epoch', epoch)
      redis.call('DEL', base .. ':history')
    end
  end
  local occupied = first and added
  if occupied then
    channel_event(keys, 'occupied', node, {args[4], args[5], args[6]})
  end
  return {occupied and 1 or 0, epoch}
end

--   FCALL switchyard_vacate 1|2 <keys> <node> <maxlen> <ts> <channel>
-- returns {vacated_transition}.
local function vacate(keys, args)
  local base, node = keys[1], args[1]
  local nodes = base .. ':nodes'
  local removed = redis.call('SREM', nodes, node) == 1
  local vacated = removed and redis.call('SCARD', nodes) == 0
  if vacated then
    local meta = base .. ':meta'
    if redis.call('HEXISTS', meta, 'top') == 0 then
      redis.call('DEL', meta)
    end
    channel_event(keys, 'vacated', node, {args[2], args[3], args[4]})
  end
  return {vacated and 1 or 0}
end

-- After a failover that lost writes (SPEC 8.5), the history's offsets mean other
-- publications than the ones clients saw: a node that detects it gives the channel a
-- new epoch, so every client learns recovered=false instead of a wrong recovery.
--   FCALL switchyard_reepoch 1 <prefix>:{<channel>} <expected-epoch> <new-epoch>
-- returns the epoch now in force (unchanged when another node did it first).
local function reepoch(keys, args)
  local meta = keys[1] .. ':meta'
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch == args[1] then
    redis.call('HSET', meta, 'epoch', args[2])
    redis.call('DEL', keys[1] .. ':history')
    return args[2]
  end
  return epoch or ''
end

redis.register_function('switchyard_reepoch', reepoch)
redis.register_function('switchyard_occupy', occupy)
redis.register_function('switchyard_vacate', vacate)
redis.register_function('switchyard_publish', publish)
redis.register_function('switchyard_history', history)
redis.register_function('switchyard_presence_add', presence_add)
redis.register_function('switchyard_presence_remove', presence_remove)
redis.register_function('switchyard_presence', presence_get)
redis.register_function('switchyard_user_connect', user_connect)
redis.register_function('switchyard_user_disconnect', user_disconnect)
redis.register_function('switchyard_user_reap', user_reap)
