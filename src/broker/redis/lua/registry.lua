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


--   FCALL switchyard_revoke 1 <prefix>:revoked <user> <before> <until>
-- Records a revocation (the later `before` and `until` win) and forgets expired ones.
local function revoke(keys, args)
  local user, before, till = args[1], tonumber(args[2]) or 0, tonumber(args[3]) or 0
  local now = tonumber(redis.call('TIME')[1])
  local old = redis.call('HGET', keys[1], user)
  if old then
    local b, u = string.match(old, '^(%d+):(%d+)$')
    if b and tonumber(b) > before then before = tonumber(b) end
    if u and tonumber(u) > till then till = tonumber(u) end
  end
  redis.call('HSET', keys[1], user, before .. ':' .. till)
  local all = redis.call('HGETALL', keys[1])
  local latest = till
  for i = 1, #all, 2 do
    local u = tonumber(string.match(all[i + 1], ':(%d+)$') or '0')
    if u <= now then
      redis.call('HDEL', keys[1], all[i])
    elseif u > latest then
      latest = u
    end
  end
  redis.call('EXPIREAT', keys[1], latest)
  return 1
end
