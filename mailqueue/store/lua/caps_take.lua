local now, amount = tonumber(ARGV[1]), tonumber(ARGV[2])
local function window(key, cap, reserve, width, span)
  if cap <= 0 then return 0, 0 end
  local current = math.floor(now / width)
  local oldest = current - span + 1
  local used, first = 0, nil
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local bucket, count = tonumber(fields[i]), tonumber(fields[i + 1])
    if bucket < oldest then
      redis.call('HDEL', key, fields[i])
    else
      used = used + count
      if not first or bucket < first then first = bucket end
    end
  end
  local limit = cap
  if ARGV[7] == 'bulk' then limit = cap - reserve end
  -- A call larger than the whole cap goes alone into an empty window.
  if used + amount <= limit or used == 0 then return 0, used end
  local frees = ((first or current) + span) * width - now
  return math.max(frees, 1), used
end
local wait_h = window(KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[5]), 60, 60)
local wait_d = window(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[6]), 3600, 24)
if wait_h > 0 or wait_d > 0 then return math.ceil(math.max(wait_h, wait_d)) end
if tonumber(ARGV[3]) > 0 then
  redis.call('HINCRBY', KEYS[1], math.floor(now / 60), amount)
  redis.call('EXPIRE', KEYS[1], 3700)
end
if tonumber(ARGV[4]) > 0 then
  redis.call('HINCRBY', KEYS[2], math.floor(now / 3600), amount)
  redis.call('EXPIRE', KEYS[2], 90000)
end
return 0
