local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_us = tonumber(redis.call('GET', KEYS[1]) or '0')
return math.max(until_us - now, 0)
