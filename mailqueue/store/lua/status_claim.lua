local out = {}
local now_iso, now_ms, lease, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local reconcile = ARGV[5] == '1'
local n = #KEYS / 3
for i = 1, n do
  local key, gkey, ckey = KEYS[i], KEYS[n + i], KEYS[2 * n + i]
  local base = 5 + 3 * (i - 1)
  local part, rcount, expires = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  -- Every field the claim reads, in one command.
  local f = redis.call(
    'HMGET', key, 'lease:' .. part, 'state', 'not_before', 'done:' .. part, 'doubt:' .. part,
    'began:' .. part, 'attempts')
  local held = tonumber(f[1])
  local state = f[2]
  local campaign = false
  if ckey ~= key then campaign = redis.call('HGET', ckey, 'state') end
  local not_before = tonumber(f[3])
  if f[4] then
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
    local fields = {'lease:' .. part, now_ms + lease, 'updated_at', now_iso}
    if held and reconcile then
      if not f[5] then
        fields[#fields + 1] = 'doubt:' .. part
        fields[#fields + 1] = f[6] or (held - lease)
      end
    elseif held then
      redis.call('HINCRBY', key, 'possible_duplicates', 1)
    end
    if held then redis.call('HINCRBY', key, 'lost:' .. part, 1) end
    if not state then
      fields[#fields + 1] = 'created_at'
      fields[#fields + 1] = now_iso
      fields[#fields + 1] = 'parts'
      fields[#fields + 1] = 1
    end
    if state ~= 'sent' and state ~= 'partially_sent' and state ~= 'failed' then
      if state ~= 'sending' then
        if gkey ~= key and state then
          redis.call('HINCRBY', gkey, state, -1)
          redis.call('HINCRBY', gkey, 'sending', 1)
        end
      end
      fields[#fields + 1] = 'state'
      fields[#fields + 1] = 'sending'
    end
    if ckey ~= key and not held then
      redis.call('HINCRBY', ckey, 'n:waiting', -rcount)
      redis.call('HINCRBY', ckey, 'n:sending', rcount)
    end
    if reconcile then
      fields[#fields + 1] = 'began:' .. part
      fields[#fields + 1] = now_ms
    end
    if held then
      out[i] = 8
      if reconcile then out[i] = 9 end
    elseif reconcile and f[5] then
      out[i] = 3
    else
      fields[#fields + 1] = 'attempts'
      fields[#fields + 1] = (tonumber(f[7]) or 0) + 1
      out[i] = 1
    end
    redis.call('HSET', key, unpack(fields))
    -- A record made at enqueue has its expiry already; the outcome renews it.
    if not state then redis.call('EXPIRE', key, ttl) end
  end
end
return out
