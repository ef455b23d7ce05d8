local moved = 0
for i = 3, #ARGV, 3 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    local envelope = ARGV[i + 1]
    local parts = tonumber(ARGV[i + 2])
    if parts > 0 then
      envelope = redis.call('HGET', KEYS[parts], ARGV[i + 1])
      redis.call('HDEL', KEYS[parts], ARGV[i + 1])
    end
    if envelope then
      redis.call('XADD', KEYS[2], '*', 'e', envelope)
      moved = moved + 1
    end
  end
end
if moved > 0 and ARGV[1] == '1' then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], KEYS[2])
end
return moved
