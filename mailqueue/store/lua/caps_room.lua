local now = tonumber(ARGV[1])
local function left(key, cap, reserve, width, span)
  if cap <= 0 then return -1, 0 end
  local current = math.floor(now / width)
  local oldest = current - span + 1
  local used, first = 0, nil
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local bucket, count = tonumber(fields[i]), tonumber(fields[i + 1])
    if bucket >= oldest then
      used = used + count
      if not first or bucket < first then first = bucket end
    end
  end
  local limit = cap
  if ARGV[6] == 'bulk' then limit = cap - reserve end
  return math.max(limit - used, 0), math.max(((first or current) + span) * width - now, 1)
end
local room_h, wait_h = left(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[4]), 60, 60)
local room_d, wait_d = left(KEYS[2], tonumber(ARGV[3]), tonumber(ARGV[5]), 3600, 24)
if room_h < 0 then return {room_d, math.ceil(wait_d)} end
if room_d < 0 or room_h < room_d then return {room_h, math.ceil(wait_h)} end
return {room_d, math.ceil(wait_d)}
