local at = ARGV[1]
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, ARGV[2 * i], ARGV[2 * i + 1])
  redis.call('EXPIREAT', key, at)
end
return #KEYS
