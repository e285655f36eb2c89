-- Execute partitions: which worker reads which normalized stream. A worker is a member
-- while it renews its membership (a sorted set scored by expiry, server clock); the
-- members sorted by name share the partitions round robin (partition p prefers member
-- p mod count), and a partition's lease key names the one worker reading it.
--
-- KEYS[1] members (sorted set)  KEYS[2+p] lease of partition p, for p = 0 .. #KEYS - 2
-- ARGV[1] worker  ARGV[2] lease ttl (ms)  ARGV[3] operation:
--   'join'    become (or stay) a member, take nothing yet
--   'round'   join or stay, renew the partitions held, take the free ones preferring it
--   'any'     renew the partitions held and take every free one but ARGV[4..], without
--             becoming a member (a worker draining all it can, then leaving)
--   'renew'   stay a member and renew the partitions held, take and give up nothing
--   'release' give up the partitions ARGV[4..] (0-based) if it holds them
--   'leave'   stop being a member and give up every partition held
-- Returns, for 'round' and 'any', {partitions held now, those of them preferring another
-- member (to hand over once the worker stopped reading them), partitions preferring this
-- worker that another one still holds}; else {}.
local me, ttl, op = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local count = #KEYS - 1
if not ttl or ttl <= 0 or count < 1 then
  return redis.error_reply('ERR partition: bad ttl or no partitions')
end

local function lease(p)
  return KEYS[p + 2]
end

if op == 'release' then
  for i = 4, #ARGV do
    local p = tonumber(ARGV[i])
    if p and p >= 0 and p < count and redis.call('GET', lease(p)) == me then
      redis.call('DEL', lease(p))
    end
  end
  return {}
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if op == 'leave' then
  redis.call('ZREM', KEYS[1], me)
  for p = 0, count - 1 do
    if redis.call('GET', lease(p)) == me then
      redis.call('DEL', lease(p))
    end
  end
  return {}
end
if op ~= 'round' and op ~= 'any' and op ~= 'join' and op ~= 'renew' then
  return redis.error_reply('ERR partition: unknown operation ' .. tostring(op))
end

if op ~= 'any' then
  redis.call('ZADD', KEYS[1], now + ttl, me)
end
if op == 'join' then
  return {}
end
if op == 'renew' then
  for p = 0, count - 1 do
    if redis.call('GET', lease(p)) == me then
      redis.call('PEXPIRE', lease(p), ttl)
    end
  end
  return {}
end
local skip = {}
for i = 4, #ARGV do
  skip[tonumber(ARGV[i])] = true
end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.sort(members)
local held, extra, wanted = {}, {}, {}
for p = 0, count - 1 do
  local holder = redis.call('GET', lease(p))
  local preferred = nil
  if #members > 0 then
    preferred = members[(p % #members) + 1]
  end
  if holder == me then
    redis.call('PEXPIRE', lease(p), ttl)
    held[#held + 1] = p
    if preferred ~= me and op == 'round' then
      extra[#extra + 1] = p
    end
  elseif not holder and (preferred == me or (op == 'any' and not skip[p])) then
    redis.call('SET', lease(p), me, 'PX', ttl)
    held[#held + 1] = p
  elseif preferred == me then
    wanted[#wanted + 1] = p
  end
end
return {held, extra, wanted}
