local key, gkey, ckey, part = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local outcome = redis.call('HGET', key, 'done:' .. part)
if not outcome then return 0 end
redis.call('HDEL', key, 'done:' .. part, 'error', 'next_attempt_at')
redis.call('HINCRBY', key, 'parts_' .. outcome, -1)
if ckey ~= key and outcome == 'failed' then
  -- Its recipients wait again in their campaign.
  redis.call('HINCRBY', ckey, 'n:failed', -tonumber(ARGV[3]))
  redis.call('HINCRBY', ckey, 'n:waiting', tonumber(ARGV[3]))
end
local old = redis.call('HGET', key, 'state')
redis.call('HSET', key, 'state', 'queued', 'updated_at', ARGV[2])
if gkey ~= key and old ~= 'queued' then
  if old then redis.call('HINCRBY', gkey, old, -1) end
  redis.call('HINCRBY', gkey, 'queued', 1)
end
return 1
