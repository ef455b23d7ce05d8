local args = cjson.decode(ARGV[1])
local ranks = args.ranks
local recorded, duplicates, gone, changed = 0, 0, 0, 0
for _, op in ipairs(args.ops) do
  local ttl = redis.call('PTTL', KEYS[op.s])
  if ttl == -2 then
    gone = gone + 1
  elseif op.d > 0 and not redis.call('SET', KEYS[op.d], '1', 'NX', 'EX', args.evt_ttl) then
    duplicates = duplicates + 1
  else
    if ttl < 0 then ttl = args.default_ttl_ms end
    local rkey, ekey = KEYS[op.r], KEYS[op.e]
    if op.status ~= '' then
      for _, rcpt in ipairs(op.rcpts) do
        local entry = {status = false, message_id = op.mid}
        local raw = redis.call('HGET', rkey, rcpt)
        if raw then
          local ok, decoded = pcall(cjson.decode, raw)
          if ok and type(decoded) == 'table' then entry = decoded end
        end
        local current = ranks[entry.status] or -1
        if ranks[op.status] > current then
          if op.c > 0 and raw and entry.status then
            -- The recipient's campaign counts it at its new furthest point.
            local was = entry.status
            if was == 'queued' then was = 'sent' end
            redis.call('HINCRBY', KEYS[op.c], 'n:' .. was, -1)
            redis.call('HINCRBY', KEYS[op.c], 'n:' .. op.status, 1)
            redis.call('HSET', KEYS[op.c], 'updated_at', args.now)
          end
          entry.status = op.status
          entry.updated_at = args.now
          entry.event_at = op.at
          redis.call('HSET', rkey, rcpt, cjson.encode(entry))
          changed = changed + 1
        end
      end
      redis.call('PEXPIRE', rkey, ttl)
    end
    redis.call('LPUSH', ekey, op.event)
    redis.call('LTRIM', ekey, 0, args.kept - 1)
    redis.call('PEXPIRE', ekey, ttl)
    recorded = recorded + 1
  end
end
local unknown = gone + args.unknown
local counts = {webhook_events = recorded, webhook_duplicates = duplicates,
                webhook_unknown_message_ids = unknown, webhook_invalid_ids = args.invalid}
for name, amount in pairs(counts) do
  if amount > 0 then redis.call('HINCRBY', KEYS[1], name, amount) end
end
return {recorded, duplicates, unknown, changed}
