local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current >= until_us then
  return current - now
end
local ttl_ms = math.ceil(tonumber(ARGV[1]) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%d', until_us), 'PX', ttl_ms)
return until_us - now
