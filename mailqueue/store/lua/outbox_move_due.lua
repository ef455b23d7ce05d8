local moved = 0
for i = 3, #ARGV, 2 do
  if redis.call('ZREM', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', KEYS[2], '*', 'e', ARGV[i + 1])
    moved = moved + 1
  end
end
if moved > 0 and ARGV[1] == '1' then
  redis.call('ZADD', KEYS[3], 'NX', ARGV[2], KEYS[2])
end
return moved
