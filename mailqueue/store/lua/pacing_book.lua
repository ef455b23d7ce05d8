local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[4])
local amount = tonumber(ARGV[5])
local interval = tonumber(ARGV[1])
local own_cap = amount
if redis.call('EXISTS', KEYS[2]) == 1 then
  interval = tonumber(ARGV[2])
  own_cap = amount - tonumber(ARGV[6])
end
local cutoff = string.format('(%d', now - window)
local held = redis.call('ZCOUNT', KEYS[3], cutoff, '+inf')
local bulk_held = redis.call('ZCOUNT', KEYS[4], cutoff, '+inf')
local free = math.max(0, math.min(amount - held - bulk_held, own_cap - held))
local burst = tonumber(ARGV[3])
interval = math.max(interval, math.floor(window / math.max(held + free - burst - 1, 1)))
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + interval
local start = math.max(now, tat - burst * interval)
local following = math.max(now, tat + interval - burst * interval)
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
return {start - now, following - now}
