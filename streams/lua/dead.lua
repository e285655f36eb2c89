-- Move an entry that failed a stage too many times to the dead-letter stream, give its
-- patch a rejected outcome (so that nothing waits forever), and acknowledge it; only
-- if the entry is still pending for this consumer.
--
-- KEYS[1] stream  KEYS[2] dead-letter stream  KEYS[3] outcomes  KEYS[4] id record
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] entry id  ARGV[4] dead cap
-- ARGV[5] dead-letter fields, ARGV[6] outcome fields: each a JSON array [name, value, ...]
--         from streams.codec.event_fields, without 'at', which the script appends
-- ARGV[7] id record JSON
-- ARGV[8] id record ttl (ms)
-- Returns 'ok' or 'fenced'.
local pel = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pel == 0 or pel[1][2] ~= ARGV[2] then
  return 'fenced'
end
local now = now_ms()
local dead = cjson.decode(ARGV[5])
dead[#dead + 1] = 'at'
dead[#dead + 1] = now
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', unpack(dead))
local outcome = cjson.decode(ARGV[6])
outcome[#outcome + 1] = 'at'
outcome[#outcome + 1] = now
redis.call('XADD', KEYS[3], '*', unpack(outcome))
record_unless_decided(KEYS[4], ARGV[7], tonumber(ARGV[8]))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 'ok'
