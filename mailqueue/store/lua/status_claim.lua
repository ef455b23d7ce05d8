local out = {}
local now_iso, now_ms, lease, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n = #KEYS / 3
for i = 1, n do
  local key, gkey, ckey = KEYS[i], KEYS[n + i], KEYS[2 * n + i]
  local base = 5 + 3 * (i - 1)
  local part, rcount, expires = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local held = tonumber(redis.call('HGET', key, 'lease:' .. part))
  local state = redis.call('HGET', key, 'state')
  local campaign = false
  if ckey ~= key then campaign = redis.call('HGET', ckey, 'state') end
  local not_before = tonumber(redis.call('HGET', key, 'not_before'))
  if redis.call('HEXISTS', key, 'done:' .. part) == 1 then
    out[i] = 0
  elseif held and held > now_ms then
    out[i] = 2
  elseif not held and (state == 'cancelled' or campaign == 'cancelled') then
    out[i] = 5
  elseif not held and expires > 0 and expires <= now_ms then
    out[i] = 6
  elseif not held and campaign == 'paused' then
    out[i] = 4
  elseif not held and not_before and not_before > now_ms then
    out[i] = 7
  else
    if held and ARGV[5] == '1' then
      local began = redis.call('HGET', key, 'began:' .. part) or (held - lease)
      redis.call('HSETNX', key, 'doubt:' .. part, began)
    elseif held then
      redis.call('HINCRBY', key, 'possible_duplicates', 1)
    end
    if held then redis.call('HINCRBY', key, 'lost:' .. part, 1) end
    if not state then
      redis.call('HSET', key, 'created_at', now_iso, 'parts', 1)
    end
    if state ~= 'sent' and state ~= 'partially_sent' and state ~= 'failed' then
      if state ~= 'sending' then
        if gkey ~= key and state then
          redis.call('HINCRBY', gkey, state, -1)
          redis.call('HINCRBY', gkey, 'sending', 1)
        end
      end
      redis.call('HSET', key, 'state', 'sending')
    end
    if ckey ~= key and not held then
      redis.call('HINCRBY', ckey, 'n:waiting', -rcount)
      redis.call('HINCRBY', ckey, 'n:sending', rcount)
    end
    redis.call('HSET', key, 'lease:' .. part, now_ms + lease, 'updated_at', now_iso)
    if ARGV[5] == '1' then redis.call('HSET', key, 'began:' .. part, now_ms) end
    redis.call('EXPIRE', key, ttl)
    if held then
      out[i] = 8
      if ARGV[5] == '1' then out[i] = 9 end
    elseif ARGV[5] == '1' and redis.call('HEXISTS', key, 'doubt:' .. part) == 1 then
      out[i] = 3
    else
      redis.call('HINCRBY', key, 'attempts', 1)
      out[i] = 1
    end
  end
end
return out
