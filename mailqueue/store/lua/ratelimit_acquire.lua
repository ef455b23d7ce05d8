local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local reserve = tonumber(ARGV[3])
local share = tonumber(ARGV[4])
local bulk = ARGV[5] == 'b'
if bulk then
  redis.call('SET', KEYS[4], '1', 'PX', ARGV[7])
end
local until_us = tonumber(redis.call('GET', KEYS[3]) or '0')
if until_us > now then
  return until_us - now
end
local cutoff = string.format('%d', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
local nt = redis.call('ZCARD', KEYS[1])
local nb = redis.call('ZCARD', KEYS[2])
local total = nt + nb

local function grant(key)
  redis.call('ZADD', key, string.format('%d', now), ARGV[6])
  redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1000)
  return 0
end
-- The score of the k-th oldest grant in one log, or in both together.
local function oldest_in(key, k)
  local row = redis.call('ZRANGE', key, k - 1, k - 1, 'WITHSCORES')
  return tonumber(row[2])
end
local function oldest(k)
  local a = redis.call('ZRANGE', KEYS[1], 0, k - 1, 'WITHSCORES')
  local b = redis.call('ZRANGE', KEYS[2], 0, k - 1, 'WITHSCORES')
  local i, j, score = 2, 2, 0
  for _ = 1, k do
    local x, y = tonumber(a[i]), tonumber(b[j])
    if y == nil or (x ~= nil and x <= y) then score = x; i = i + 2 else score = y; j = j + 2 end
  end
  return score
end
local function wait_for(score)
  return math.max(score + window - now, 1)
end

if bulk then
  if total < amount - reserve or (nb < share and total < amount) then
    return grant(KEYS[2])
  end
  local wait = wait_for(oldest(total - (amount - reserve) + 1))
  if share > 0 then
    local guaranteed = 1
    if nb >= share then
      guaranteed = wait_for(oldest_in(KEYS[2], nb - share + 1))
    end
    if total >= amount then
      guaranteed = math.max(guaranteed, wait_for(oldest(total - amount + 1)))
    end
    wait = math.min(wait, guaranteed)
  end
  return wait
end
local own_cap = amount
if redis.call('EXISTS', KEYS[4]) == 1 then
  own_cap = amount - share
end
if total < amount and nt < own_cap then
  return grant(KEYS[1])
end
local wait = 1
if total >= amount then
  wait = wait_for(oldest(total - amount + 1))
end
if nt >= own_cap then
  wait = math.max(wait, wait_for(oldest_in(KEYS[1], nt - own_cap + 1)))
end
return wait
