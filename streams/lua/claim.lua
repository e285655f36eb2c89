-- Take over the pending entries of a consumer whose lease has expired, atomically, so
-- that two claimers never both take an entry and a live worker is never robbed.
-- Once the dead consumer holds nothing, it is removed from the group.
--
-- KEYS[1] stream  KEYS[2] the victim's lease key
-- ARGV[1] group  ARGV[2] victim consumer  ARGV[3] claiming consumer  ARGV[4] count
-- Returns {claimed entries as XCLAIM returns them, 1 if the victim was removed else 0,
-- the ids XCLAIM dropped because their entries were deleted (trimmed while pending)}.
local stream, group, victim, me = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {{}, 0, {}}
end
local pending = redis.call('XPENDING', stream, group, '-', '+', tonumber(ARGV[4]), victim)
local claimed = {}
local gone = {}
if #pending > 0 then
  local ids = {}
  for i, p in ipairs(pending) do
    ids[i] = p[1]
  end
  claimed = redis.call('XCLAIM', stream, group, me, 0, unpack(ids))
  -- XCLAIM leaves out (and unlists) entries whose body is gone: say which they were.
  local got = {}
  for _, entry in ipairs(claimed) do
    got[entry[1]] = true
  end
  for _, id in ipairs(ids) do
    if not got[id] then
      gone[#gone + 1] = id
    end
  end
end
local removed = 0
if #redis.call('XPENDING', stream, group, '-', '+', 1, victim) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', stream, group, victim)
  removed = 1
end
return {claimed, removed, gone}
