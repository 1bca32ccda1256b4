-- Helpers every part uses: validation, the clock, splicing, idempotency.

local RESERVED = {__RESERVED__}

local function fail(msg)
  return redis.error_reply('ERR switchyard: ' .. msg)
end

-- Checks an envelope written by a service or a node (SPEC 8.1, 8.2). Returns the reason
-- when it is not fine, else nil and the decoded envelope.
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
  return nil, env
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

