-- Put a dead letter's entry back into its stage's stream under a new id and remove the
-- dead letter, in one step: the entry is appended first and the dead letter deleted
-- after, so that nothing is lost should either fail; a dead letter already gone (retried
-- or dropped meanwhile) is left alone and nothing is appended, so an entry is never put
-- back twice.
--
-- KEYS[1] dead-letter stream  KEYS[2] the stage's stream
-- ARGV[1] the dead letter's id  ARGV[2..] the entry's fields: name, value, ...
-- Returns the new entry's id, or false when there is no such dead letter.
if #ARGV < 3 or #ARGV % 2 ~= 1 then
  return redis.error_reply('ERR retry_dead: the entry has no fields or an odd count')
end
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], ARGV[1])
return id
