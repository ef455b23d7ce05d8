if redis.call('XLEN', KEYS[1]) > 0 then return 0 end
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('DEL', KEYS[1])
return 1
