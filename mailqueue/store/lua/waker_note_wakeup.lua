local at = tonumber(redis.call('GET', KEYS[1]))
if at and at <= tonumber(ARGV[1]) and at > tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
