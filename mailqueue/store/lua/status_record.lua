local now_iso, ttl, now_s, minutes_kept = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local outcomes = {sent = 4, partial = 5, failed = 6, cancelled = 7, expired = 8}
local working = {'lease:', 'began:', 'doubt:', 'looks:', 'lost:'}
local out = {}
-- Sends made final, by minute key and state: counted once a script call.
local finals = {}
local a, k = 5, 0
while a <= #ARGV do
  local key, rkey, gkey, ckey = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  local mkey, fkey, cmkey = KEYS[k + 5], KEYS[k + 6], KEYS[k + 7]
  local part, outcome, err = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local moves, handed, send_id = ARGV[a + 3], tonumber(ARGV[a + 4]), ARGV[a + 5]
  local first, last = a + 7, a + 6 + 2 * tonumber(ARGV[a + 6])
  a, k = last + 1, k + 7
  -- 1 done, 2 state, 3 parts, 4..8 parts per outcome, 9..13 the part's working
  -- fields, 14 error: every field this write reads, in one command.
  local f = redis.call(
    'HMGET', key, 'done:' .. part, 'state', 'parts', 'parts_sent', 'parts_partial',
    'parts_failed', 'parts_cancelled', 'parts_expired', 'lease:' .. part, 'began:' .. part,
    'doubt:' .. part, 'looks:' .. part, 'lost:' .. part, 'error')
  if f[1] then
    out[#out + 1] = f[2] or ''
    out[#out + 1] = 0
  else
    local counts = {}
    for name, i in pairs(outcomes) do counts[name] = tonumber(f[i] or '0') end
    counts[outcome] = counts[outcome] + 1
    local fields = {
      'done:' .. part, outcome, 'updated_at', now_iso,
      'parts_' .. outcome, counts[outcome]}
    local gone = {}
    for i = 9, 13 do
      if f[i] then gone[#gone + 1] = working[i - 8] .. part end
    end
    for i = first, last, 1000 do
      redis.call('HSET', rkey, unpack(ARGV, i, math.min(i + 999, last)))
    end
    if ckey ~= key then
      for where, amount in pairs(cjson.decode(moves)) do
        redis.call('HINCRBY', ckey, 'n:' .. where, amount)
      end
      redis.call('HSET', ckey, 'updated_at', now_iso)
      if handed > 0 then
        redis.call('HSETNX', ckey, 'first_sent_at', now_s)
        redis.call('HSET', ckey, 'last_sent_at', now_s)
        redis.call('HINCRBY', ckey, 'handed', handed)
        local minute = tostring(math.floor(tonumber(now_s) / 60))
        redis.call('HINCRBY', cmkey, minute, handed)
        redis.call('EXPIRE', cmkey, ttl)
      end
    end
    local parts = tonumber(f[3] or '1')
    local ok, partial, failed = counts.sent, counts.partial, counts.failed
    local old = f[2]
    local state = old
    local ended = ok + partial + failed + counts.cancelled + counts.expired
    local final = 0
    local keeps_error = true
    if ended >= parts then
      -- Each write ends one part: the write that ends the last one makes the send final.
      if ended - 1 < parts then final = 1 end
      if ok == parts then state = 'sent'
      elseif ok + partial > 0 then state = 'partially_sent'
      elseif counts.cancelled > 0 then state = 'cancelled'
      elseif counts.expired > 0 then state = 'expired'
      else state = 'failed' end
      keeps_error = state == 'failed'
      if final == 1 then
        finals[mkey] = finals[mkey] or {}
        finals[mkey][state] = (finals[mkey][state] or 0) + 1
        if fkey ~= key and (state == 'failed' or state == 'partially_sent') then
          redis.call('ZADD', fkey, now_s, send_id)
          redis.call('EXPIRE', fkey, ttl)
        end
      end
    elseif old ~= 'sending' and old ~= 'cancelled' then
      state = 'sending'
    end
    if err ~= '' and keeps_error then
      fields[#fields + 1] = 'error'
      fields[#fields + 1] = err
    elseif not keeps_error and f[14] then
      gone[#gone + 1] = 'error'
    end
    if state ~= old then
      fields[#fields + 1] = 'state'
      fields[#fields + 1] = state
      if gkey ~= key then
        if old then redis.call('HINCRBY', gkey, old, -1) end
        redis.call('HINCRBY', gkey, state, 1)
      end
    end
    redis.call('HSET', key, unpack(fields))
    if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
    redis.call('EXPIRE', key, ttl)
    redis.call('EXPIRE', rkey, ttl)
    out[#out + 1] = state
    out[#out + 1] = final
  end
end
for mkey, counts in pairs(finals) do
  for state, n in pairs(counts) do
    -- A minute's counts get their expiry with their first field.
    if redis.call('HINCRBY', mkey, state, n) == n then
      redis.call('EXPIRE', mkey, minutes_kept)
    end
  end
end
return out
