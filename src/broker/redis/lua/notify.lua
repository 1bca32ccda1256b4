-- Read state, receipts and fallbacks (SPEC 15).
--
-- A user's (or session's) read positions live in its own slot:
--   <prefix>:reads:{<who>}      hash channel -> read offset
--   <prefix>:reads:{<who>}:exp  sorted set channel -> expiry ms (read_state_ttl after
--                               the position's last change)
-- Receipts and fallbacks live in the slot of the events stream <prefix>:events (their
-- keys carry its name as hash tag), so deduplicating a receipt, claiming a due
-- fallback and appending the event are one atomic step, on a Redis Cluster too:
--   {<prefix>:events}:rcv:<channel>    sorted set "<offset>:<who>" -> offset
--   {<prefix>:events}:fb:due           sorted set "<offset>|<channel>" -> due ms
--   {<prefix>:events}:fb:data          hash same member -> "<who>\n<data json>"
--   {<prefix>:events}:fb:ch:<channel>  sorted set same member -> offset

-- Forgets positions past their time (a bounded number per call).
local function reads_prune(keys, now)
  local gone = redis.call('ZRANGEBYSCORE', keys[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, ch in ipairs(gone) do
    redis.call('HDEL', keys[1], ch)
    redis.call('ZREM', keys[2], ch)
  end
end

local function expire_at_least(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end

--   FCALL switchyard_mark_read 2 <reads> <reads:exp> <channel> <offset> <ttl_ms> <now_ms>
-- returns {position, moved 0|1}: the position moves forward only.
local function mark_read(keys, args)
  local ch, offset = args[1], tonumber(args[2]) or 0
  local ttl, now = tonumber(args[3]) or 0, tonumber(args[4]) or 0
  reads_prune(keys, now)
  local current = tonumber(redis.call('HGET', keys[1], ch) or '0')
  if offset <= current then
    return {current, 0}
  end
  redis.call('HSET', keys[1], ch, offset)
  redis.call('ZADD', keys[2], now + ttl, ch)
  expire_at_least(keys[1], ttl)
  expire_at_least(keys[2], ttl)
  return {offset, 1}
end

--   FCALL switchyard_reads 2 <reads> <reads:exp> <now_ms> <limit> [<channel>...]
-- returns {channel, offset, ...}: the named channels (0 where there is no position),
-- or every channel with one (at most limit).
local function reads(keys, args)
  local now, limit = tonumber(args[1]) or 0, tonumber(args[2]) or 1000
  reads_prune(keys, now)
  local out = {}
  if #args > 2 then
    for i = 3, #args do
      out[#out + 1] = args[i]
      out[#out + 1] = tonumber(redis.call('HGET', keys[1], args[i]) or '0')
    end
    return out
  end
  local all = redis.call('HGETALL', keys[1])
  for i = 1, #all, 2 do
    if #out >= 2 * limit then
      break
    end
    out[#out + 1] = all[i]
    out[#out + 1] = tonumber(all[i + 1])
  end
  return out
end

-- Appends one event with the fields of SPEC 17, in its order.
local function emit(stream, maxlen, event, ch, who, conn, node, ts, data)
  local user, session = '', ''
  local kind, id = string.match(who, '^(%a):(.*)$')
  if kind == 'u' then
    user = id
  elseif kind == 's' then
    session = id
  end
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'event', event, 'channel', ch,
    'user_id', user, 'session_id', session, 'conn_id', conn, 'node', node, 'ts', ts,
    'data', data)
end

-- Removes the channel's pending fallbacks that `covered(offset)` says are confirmed.
local function confirm(base, ch, covered, upto)
  local idx = base .. ':fb:ch:' .. ch
  local members = redis.call('ZRANGEBYSCORE', idx, '-inf', upto)
  local n = 0
  for _, m in ipairs(members) do
    local o = tonumber(string.match(m, '^(%d+)|'))
    if covered(o) then
      redis.call('ZREM', base .. ':fb:due', m)
      redis.call('HDEL', base .. ':fb:data', m)
      redis.call('ZREM', idx, m)
      n = n + 1
    end
  end
  return n
end

--   FCALL switchyard_received 1 <prefix>:events <channel> <who> <conn> <node> <ts>
--         <maxlen> <emit 0|1> <floor> <keep_ms> <offset>...
-- returns {confirmed fallbacks, offsets confirmed for the first time by this user...}
local function received(keys, args)
  local stream = keys[1]
  local base = '{' .. stream .. '}'
  local ch, who, conn, node, ts = args[1], args[2], args[3], args[4], args[5]
  local maxlen, emit_on = args[6], args[7] == '1'
  local floor, keep = tonumber(args[8]) or 0, tonumber(args[9]) or 0
  local rcv = base .. ':rcv:' .. ch
  local out = {0}
  local given, top = {}, 0
  for i = 10, #args do
    local o = tonumber(args[i])
    if o and o > 0 then
      given[o] = true
      if o > top then
        top = o
      end
      if redis.call('ZADD', rcv, 'NX', o, o .. ':' .. who) == 1 then
        out[#out + 1] = o
        if emit_on then
          emit(stream, maxlen, 'received', ch, who, conn, node, ts, '{"offset":' .. o .. '}')
        end
      end
    end
  end
  -- Receipts of publications no longer in history are forgotten.
  if floor > 0 then
    redis.call('ZREMRANGEBYSCORE', rcv, '-inf', floor)
  end
  if keep > 0 then
    redis.call('PEXPIRE', rcv, keep)
  end
  out[1] = confirm(base, ch, function(o) return given[o] end, top)
  return out
end

--   FCALL switchyard_read_event 1 <prefix>:events <channel> <who> <conn> <node> <ts>
--         <maxlen> <emit 0|1> <read_offset>
-- After a position moved: its `read` event, and the fallbacks it covers confirmed.
-- returns the number of fallbacks confirmed.
local function read_event(keys, args)
  local stream = keys[1]
  local base = '{' .. stream .. '}'
  local ch, who, conn, node, ts, maxlen = args[1], args[2], args[3], args[4], args[5], args[6]
  local upto = tonumber(args[8]) or 0
  if args[7] == '1' then
    emit(stream, maxlen, 'read', ch, who, conn, node, ts, '{"read_offset":' .. upto .. '}')
  end
  return confirm(base, ch, function() return true end, upto)
end

--   FCALL switchyard_fallback 1 <prefix>:events <channel> <offset> <due_ms> <who> <data>
-- returns 1 when scheduled, 0 when already confirmed or already pending.
local function fallback(keys, args)
  local base = '{' .. keys[1] .. '}'
  local ch, offset, due = args[1], tonumber(args[2]) or 0, tonumber(args[3]) or 0
  local member = offset .. '|' .. ch
  if redis.call('ZCOUNT', base .. ':rcv:' .. ch, offset, offset) > 0 then
    return 0
  end
  if redis.call('ZADD', base .. ':fb:due', 'NX', due, member) == 0 then
    return 0
  end
  redis.call('HSET', base .. ':fb:data', member, args[4] .. '\n' .. args[5])
  redis.call('ZADD', base .. ':fb:ch:' .. ch, offset, member)
  return 1
end

--   FCALL switchyard_fire 1 <prefix>:events <now_ms> <limit> <node> <ts> <maxlen> <emit 0|1>
-- Claims the due fallbacks and appends one `undelivered` event for each; returns how
-- many fired.
local function fire(keys, args)
  local stream = keys[1]
  local base = '{' .. stream .. '}'
  local now, limit = tonumber(args[1]) or 0, tonumber(args[2]) or 100
  local node, ts, maxlen, emit_on = args[3], args[4], args[5], args[6] == '1'
  local due = redis.call('ZRANGEBYSCORE', base .. ':fb:due', '-inf', now, 'LIMIT', 0, limit)
  for _, m in ipairs(due) do
    local ch = string.match(m, '^%d+|(.*)$') or ''
    local stored = redis.call('HGET', base .. ':fb:data', m)
    redis.call('ZREM', base .. ':fb:due', m)
    redis.call('HDEL', base .. ':fb:data', m)
    redis.call('ZREM', base .. ':fb:ch:' .. ch, m)
    if stored and emit_on then
      local cut = string.find(stored, '\n', 1, true)
      if cut then
        emit(stream, maxlen, 'undelivered', ch, string.sub(stored, 1, cut - 1), '', node, ts,
          string.sub(stored, cut + 1))
      end
    end
  end
  return #due
end

--   FCALL switchyard_lease 1 {<prefix>:events}:lease:<name> <holder> <ttl_ms>
-- Takes the lease, or keeps it for its holder; returns 1 when held.
local function lease(keys, args)
  local current = redis.call('GET', keys[1])
  if current == false or current == args[1] then
    redis.call('SET', keys[1], args[1], 'PX', tonumber(args[2]) or 10000)
    return 1
  end
  return 0
end
