local targets = {ST = 3, SB = 4, BT = 5, BB = 6, S = 7, B = 8}
local moved = 0
for i = 1, tonumber(ARGV[1]) do
  local raw = redis.call('LPOP', KEYS[1])
  if not raw then break end
  local bar = string.find(raw, '|', 1, true)
  local key = targets[string.sub(raw, 1, bar - 1)]
  redis.call('XADD', KEYS[key], '*', 'e', string.sub(raw, bar + 1))
  if key <= 6 then redis.call('ZADD', KEYS[2], 'NX', ARGV[2], KEYS[key]) end
  moved = moved + 1
end
return moved
