local key, rkey, gkey, ckey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local part, outcome, now_iso, ttl, err = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HEXISTS', key, 'done:' .. part) == 1 then
  return {redis.call('HGET', key, 'state') or '', 0}
end
redis.call('HSET', key, 'done:' .. part, outcome, 'updated_at', now_iso)
redis.call(
  'HDEL', key, 'lease:' .. part, 'began:' .. part, 'doubt:' .. part, 'looks:' .. part,
  'lost:' .. part)
redis.call('HINCRBY', key, 'parts_' .. outcome, 1)
if err ~= '' then redis.call('HSET', key, 'error', err) end
for i = 10, #ARGV, 2 do
  redis.call('HSET', rkey, ARGV[i], ARGV[i + 1])
end
if ckey ~= key then
  for where, amount in pairs(cjson.decode(ARGV[6])) do
    redis.call('HINCRBY', ckey, 'n:' .. where, amount)
  end
  redis.call('HSET', ckey, 'updated_at', now_iso)
  local handed = tonumber(ARGV[7])
  if handed > 0 then
    redis.call('HSETNX', ckey, 'first_sent_at', ARGV[8])
    redis.call('HSET', ckey, 'last_sent_at', ARGV[8])
    redis.call('HINCRBY', ckey, 'handed', handed)
    local minute = tostring(math.floor(tonumber(ARGV[8]) / 60))
    redis.call('HINCRBY', KEYS[7], minute, handed)
    redis.call('EXPIRE', KEYS[7], ttl)
  end
end
local function count(name) return tonumber(redis.call('HGET', key, 'parts_' .. name) or '0') end
local parts = tonumber(redis.call('HGET', key, 'parts') or '1')
local ok, partial, failed = count('sent'), count('partial'), count('failed')
local cancelled, expired = count('cancelled'), count('expired')
local old = redis.call('HGET', key, 'state')
local state = old
local ended = ok + partial + failed + cancelled + expired
local final = 0
if ended >= parts then
  -- Each write ends one part: the write that ends the last one makes the send final.
  if ended - 1 < parts then final = 1 end
  if ok == parts then state = 'sent'
  elseif ok + partial > 0 then state = 'partially_sent'
  elseif cancelled > 0 then state = 'cancelled'
  elseif expired > 0 then state = 'expired'
  else state = 'failed' end
  if state ~= 'failed' then redis.call('HDEL', key, 'error') end
  if final == 1 then
    redis.call('HINCRBY', KEYS[5], state, 1)
    redis.call('EXPIRE', KEYS[5], MINUTES_KEPT)
    if KEYS[6] ~= key and (state == 'failed' or state == 'partially_sent') then
      redis.call('ZADD', KEYS[6], ARGV[8], ARGV[9])
      redis.call('EXPIRE', KEYS[6], ttl)
    end
  end
elseif old ~= 'sending' and old ~= 'cancelled' then
  state = 'sending'
end
if state ~= old then
  redis.call('HSET', key, 'state', state)
  if gkey ~= key then
    if old then redis.call('HINCRBY', gkey, old, -1) end
    redis.call('HINCRBY', gkey, state, 1)
  end
end
redis.call('EXPIRE', key, ttl)
redis.call('EXPIRE', rkey, ttl)
return {state, final}
