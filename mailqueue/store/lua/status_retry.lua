local key, gkey, ckey, part = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local f = redis.call('HMGET', key, 'done:' .. part, 'lease:' .. part, 'lost:' .. part, 'state')
if f[1] then return 0 end
if f[2] or f[3] then redis.call('HDEL', key, 'lease:' .. part, 'lost:' .. part) end
local fields = {'updated_at', ARGV[2]}
if ARGV[3] ~= '' then fields[#fields + 1] = 'error'; fields[#fields + 1] = ARGV[3] end
if ARGV[4] ~= '' then fields[#fields + 1] = 'next_attempt_at'; fields[#fields + 1] = ARGV[4] end
if ARGV[7] ~= '' then fields[#fields + 1] = 'waiting_for'; fields[#fields + 1] = ARGV[7] end
if ARGV[8] ~= '' then fields[#fields + 1] = 'tries_left'; fields[#fields + 1] = ARGV[8] end
if ARGV[5] == '1' then redis.call('HINCRBY', key, 'possible_duplicates', 1) end
if ckey ~= key and f[2] then
  redis.call('HINCRBY', ckey, 'n:sending', -tonumber(ARGV[6]))
  redis.call('HINCRBY', ckey, 'n:waiting', tonumber(ARGV[6]))
end
local old = f[4]
if old == 'sending' or old == 'queued' then
  local state = 'retrying'
  if ARGV[7] == '' then state = 'queued' end
  if state ~= old then
    fields[#fields + 1] = 'state'
    fields[#fields + 1] = state
    if gkey ~= key then
      redis.call('HINCRBY', gkey, old, -1)
      redis.call('HINCRBY', gkey, state, 1)
    end
    if state == 'retrying' then
      -- A minute's counts get their expiry with their first field.
      if redis.call('HINCRBY', KEYS[4], state, 1) == 1 then
        redis.call('EXPIRE', KEYS[4], ARGV[9])
      end
    end
  end
end
redis.call('HSET', key, unpack(fields))
return 1
