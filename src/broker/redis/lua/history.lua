-- History-aware publishing and reading (SPEC 8.2, 5.2):
--
--   FCALL switchyard_publish 1 <prefix>:{<channel>} <envelope-json> <history_size> <history_ttl_seconds> [<idempotency_key> <window_seconds>]
--
-- returns {offset, epoch} ({0, ""} without history), with a third element 1 when the
-- idempotency key was seen within its window (nothing published again). KEYS[1] is
-- also the pub/sub channel; the history stream (<key>:history), its meta hash
-- (<key>:meta: epoch, top) and idempotency keys share its hash tag. The stored and
-- published envelope is the service's text with "offset", "epoch", "i" (the entry's
-- id) and "h" spliced in front: the payload is never re-encoded, so big numbers and
-- key order survive.

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

