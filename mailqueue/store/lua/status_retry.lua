local key, gkey, ckey, part = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
if redis.call('HEXISTS', key, 'done:' .. part) == 1 then return 0 end
local had = redis.call('HDEL', key, 'lease:' .. part)
redis.call('HDEL', key, 'lost:' .. part)
redis.call('HSET', key, 'updated_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', key, 'error', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', key, 'next_attempt_at', ARGV[4]) end
if ARGV[5] == '1' then redis.call('HINCRBY', key, 'possible_duplicates', 1) end
if ARGV[7] ~= '' then redis.call('HSET', key, 'waiting_for', ARGV[7]) end
if ARGV[8] ~= '' then redis.call('HSET', key, 'tries_left', ARGV[8]) end
if ckey ~= key and had == 1 then
  redis.call('HINCRBY', ckey, 'n:sending', -tonumber(ARGV[6]))
  redis.call('HINCRBY', ckey, 'n:waiting', tonumber(ARGV[6]))
end
local old = redis.call('HGET', key, 'state')
if old == 'sending' or old == 'queued' then
  local state = 'retrying'
  if ARGV[7] == '' then state = 'queued' end
  if state ~= old then
    redis.call('HSET', key, 'state', state)
    if gkey ~= key then
      redis.call('HINCRBY', gkey, old, -1)
      redis.call('HINCRBY', gkey, state, 1)
    end
    if state == 'retrying' then
      redis.call('HINCRBY', KEYS[4], state, 1)
      redis.call('EXPIRE', KEYS[4], MINUTES_KEPT)
    end
  end
end
return 1
