local key, gkey = KEYS[1], KEYS[2]
local old = redis.call('HGET', key, 'state')
if old ~= 'queued' and old ~= 'retrying' then return old or '' end
redis.call('HSET', key, 'state', 'cancelled', 'updated_at', ARGV[1])
if gkey ~= key then
  redis.call('HINCRBY', gkey, old, -1)
  redis.call('HINCRBY', gkey, 'cancelled', 1)
end
return old
