local old = redis.call('HGET', KEYS[1], 'state')
if not old then return '' end
if old == 'cancelled' then return old end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[3])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'reason', ARGV[2])
else
  redis.call('HDEL', KEYS[1], 'reason')
end
return old
