#!lua name=switchyard
-- History-aware publishing for services and nodes (SPEC 8.2), loaded by every node
-- at start with FUNCTION LOAD REPLACE.
--
--   FCALL switchyard_publish 1 <prefix>:{<channel>} <envelope-json> <history_size> <history_ttl_seconds>
--
-- returns {offset, epoch}. KEYS[1] is also the pub/sub channel; the history stream
-- (<key>:history) and its meta hash (<key>:meta: epoch, top) share its hash tag, so
-- they live in the same Redis Cluster slot. The envelope is published with
-- "offset" and "epoch" added in front of its own fields (text splice: the payload is
-- never decoded, so big numbers and key order survive).

local function publish(keys, args)
  local key = keys[1]
  local envelope = args[1]
  local size = tonumber(args[2]) or 0
  local ttl = tonumber(args[3]) or 0
  if type(envelope) ~= 'string' or string.sub(envelope, 1, 1) ~= '{' then
    return redis.error_reply('ERR envelope must be a JSON object')
  end
  if size <= 0 or ttl <= 0 then
    redis.call('__PUBLISH__', key, envelope)
    return {0, ''}
  end
  local meta = key .. ':meta'
  local history = key .. ':history'
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%x%05x', tonumber(t[1]), tonumber(t[2]))
    redis.call('HSET', meta, 'epoch', epoch)
    -- A new epoch starts an empty history: entries of a lost meta are void.
    redis.call('DEL', history)
  end
  local offset = redis.call('HINCRBY', meta, 'top', 1)
  local rest = string.sub(envelope, 2)
  local sep = ','
  if string.match(rest, '^%s*}') then
    sep = ''
  end
  -- "h":1 marks an envelope written by this function: only these carry offsets.
  local full = '{"offset":' .. offset .. ',"epoch":"' .. epoch .. '","h":1' .. sep .. rest
  redis.call('XADD', history, 'MAXLEN', size, offset .. '-1', 'd', full)
  redis.call('EXPIRE', history, ttl)
  -- The epoch outlives the publications by a day: an idle channel whose history
  -- expired keeps its offsets, and clients learn recovered=false from the gap.
  redis.call('EXPIRE', meta, ttl + 86400)
  redis.call('__PUBLISH__', key, full)
  return {offset, epoch}
end

-- The nodes' atomic history read:
--   FCALL switchyard_history 1 <prefix>:{<channel>} <since|-1> <limit|0> <new-epoch> <meta-ttl|0>
-- returns {epoch, top, entries}. With a meta TTL, a channel without meta gets
-- <new-epoch> (and an empty history), so a subscriber's epoch is the one its first
-- publication will carry; without one (gap fills) nothing is created.
local function history(keys, args)
  local key = keys[1]
  local meta = key .. ':meta'
  local hist = key .. ':history'
  local since = tonumber(args[1]) or -1
  local limit = tonumber(args[2]) or 0
  local ttl = tonumber(args[4]) or 0
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch and ttl > 0 then
    epoch = args[3]
    redis.call('HSET', meta, 'epoch', epoch)
    redis.call('DEL', hist)
  end
  if ttl > 0 then
    redis.call('EXPIRE', meta, ttl)
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
  return {epoch or '', top, entries}
end

redis.register_function('switchyard_publish', publish)
redis.register_function('switchyard_history', history)
