-- Move an entry that failed a stage too many times to the dead-letter stream, give it a
-- rejected outcome (in the outcomes stream and in its ingress entry's outcome key, so
-- that nothing waits forever), and acknowledge it; only if the entry is still pending
-- for this consumer. It never writes the id record: a dead-lettered entry owns no id.
-- Everything is read and checked before the first write (Lua does not roll back).
--
-- KEYS[1] stream  KEYS[2] dead-letter stream  KEYS[3] outcomes
-- KEYS[4] outcome key of the ingress entry; absent when the entry does not say which
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] dead cap
-- ARGV[5] dead-letter fields, ARGV[6] outcome fields: each a JSON array [name, value, ...]
--         from streams.codec.event_fields, without 'at', which the script appends
-- ARGV[7] the outcome as JSON, for the outcome key
-- ARGV[8] outcome key ttl (ms)
-- Returns 'ok' or 'fenced'.
local pel = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pel == 0 or pel[1][2] ~= ARGV[2] then
  return 'fenced'
end
local ok_dead, dead = pcall(cjson.decode, ARGV[5])
local ok_outcome, outcome = pcall(cjson.decode, ARGV[6])
local ttl = tonumber(ARGV[8])
if not (ok_dead and ok_outcome and type(dead) == 'table' and type(outcome) == 'table' and ttl) then
  return redis.error_reply('ERR dead: the dead letter or the outcome is not a JSON array')
end
local now = now_ms()
dead[#dead + 1] = 'at'
dead[#dead + 1] = now
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(dead))
outcome[#outcome + 1] = 'at'
outcome[#outcome + 1] = now
redis.call('XADD', KEYS[3], '*', unpack(outcome))
if KEYS[4] then
  put_outcome(KEYS[4], ARGV[7], ttl)
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 'ok'
