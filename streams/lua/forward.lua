-- Normalize's one atomic step for a batch of ingress entries: for each entry still
-- pending for this consumer, forward it to the normalized stream or record its
-- rejection (in the outcomes stream and in the entry's own outcome key, where its
-- submitter waits); then acknowledge them. An entry no longer ours (claimed while we
-- were slow) is skipped: its new owner decides it. A rejection here never writes the id
-- record: an id belongs to the first well-formed patch decided under it (commit.lua).
-- Everything is read and checked before the first write (Lua does not roll back).
--
-- KEYS[1] ingress stream   KEYS[2] normalized stream   KEYS[3] outcomes stream
-- KEYS[3+j] outcome key of the j-th rejected entry
-- KEYS[3+rejections+k] further normalized streams (execute partitions), if any
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] outcome key ttl (ms)
-- ARGV[4] lowest and ARGV[5] highest ingress entry id of the batch
-- ARGV[6] msgpack array of rows, one per entry: a ForwardRow (streams/scripts.py), read
-- through these positions, which follow that struct's field order:
local ENTRY = 1    -- ingress entry id
local KIND = 2     -- 'f' forward, 'r' reject
local OUTCOME = 3  -- outcome fields [name, value, ...] without 'at' (reject, else {})
local RECORD = 4   -- the entry's outcome as JSON, for its outcome key (reject, else '')
local STREAM = 5   -- position in KEYS of the normalized stream it goes to (forward; a
                   -- row of a version before partitions has none: KEYS[2])
-- ARGV[6+i] entry i's normalized patch, msgpack bytes (forward, else '')
-- The outcome fields come from streams.codec.event_fields; the script appends 'at'
-- (server clock).
-- Returns one status per entry: 'ok' or 'fenced'.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local batch = cmsgpack.unpack(ARGV[6])
local n = #batch
local k_out = {}
local answered = {}
local rejects = 0
for i = 1, n do
  local row = batch[i]
  if row[KIND] == 'r' then
    rejects = rejects + 1
    k_out[i] = KEYS[3 + rejects]
    if type(row[OUTCOME]) ~= 'table' or type(row[RECORD]) ~= 'string' then
      return redis.error_reply('ERR forward: rejection row ' .. i .. ' is malformed')
    end
    -- Its outcome key exists: this entry was rejected before and is delivered again (a
    -- consumer group created anew from id 0). One outcome per entry: only ack it.
    answered[i] = redis.call('EXISTS', k_out[i]) == 1
  elseif row[KIND] ~= 'f' or type(ARGV[6 + i]) ~= 'string'
      or (row[STREAM] ~= nil and type(row[STREAM]) ~= 'number') then
    return redis.error_reply('ERR forward: row ' .. i .. ' is malformed')
  end
end
if #KEYS < 3 + rejects or not ttl then
  return redis.error_reply('ERR forward: ' .. #KEYS .. ' keys for ' .. rejects .. ' rejections')
end
for i = 1, n do  -- a forward goes to KEYS[2] or to a stream after the outcome keys
  local at = batch[i][STREAM] or 2
  batch[i][STREAM] = at
  if batch[i][KIND] == 'f' and at ~= 2 and (at <= 3 + rejects or at > #KEYS) then
    return redis.error_reply('ERR forward: row ' .. i .. ' names key ' .. tostring(at))
  end
end

local pending = fence(stream, group, consumer, ARGV[4], ARGV[5], n)
local now = nil
local acks = {}
local out = {}
for i = 1, n do
  local row = batch[i]
  local entry, outcome = row[ENTRY], row[OUTCOME]
  if not pending(entry) then
    out[i] = 'fenced'
  else
    if row[KIND] == 'f' then
      redis.call('XADD', KEYS[row[STREAM]], '*', 'p', ARGV[6 + i])
    elseif not answered[i] then
      now = now or now_ms()
      outcome[#outcome + 1] = 'at'
      outcome[#outcome + 1] = now
      redis.call('XADD', KEYS[3], '*', unpack(outcome))
      put_outcome(k_out[i], row[RECORD], ttl)
    end
    acks[#acks + 1] = entry
    out[i] = 'ok'
  end
end
ack(stream, group, acks)
return out
