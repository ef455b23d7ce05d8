redis.call('HDEL', KEYS[2], ARGV[1])
local old = redis.call('HGET', KEYS[1], ARGV[1])
local new = cjson.decode(ARGV[2])
if old then
  local kept = cjson.decode(old)
  if kept.stream == '*' or kept.stream == new.stream then return old end
  new.stream = '*'
end
local encoded = cjson.encode(new)
redis.call('HSET', KEYS[1], ARGV[1], encoded)
return encoded
