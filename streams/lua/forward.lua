-- Normalize's one atomic step for a batch of ingress entries: for each entry still
-- pending for this consumer, forward it to the normalized stream or record its
-- rejection; then acknowledge them. An entry no longer ours (claimed while we were
-- slow) is skipped: its new owner decides it.
--
-- KEYS[1] ingress stream   KEYS[2] normalized stream   KEYS[3] outcomes stream
-- KEYS[3+j] id record of the j-th rejected entry
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] id record ttl (ms)
-- ARGV[4] lowest and ARGV[5] highest ingress entry id of the batch
-- ARGV[6] msgpack array of rows, one per entry: a ForwardRow (streams/scripts.py), read
-- through these positions, which follow that struct's field order:
local ENTRY = 1    -- ingress entry id
local KIND = 2     -- 'f' forward, 'r' reject
local OUTCOME = 3  -- outcome fields [name, value, ...] without 'at' (reject, else {})
local RECORD = 4   -- id record JSON (reject, else '')
-- ARGV[6+i] entry i's normalized patch, msgpack bytes (forward, else '')
-- The outcome fields come from streams.codec.event_fields; the script appends 'at'
-- (server clock).
-- Returns one status per entry: 'ok' or 'fenced'.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local ttl = tonumber(ARGV[3])
local batch = cmsgpack.unpack(ARGV[6])
local n = #batch
local pending = fence(stream, group, consumer, ARGV[4], ARGV[5], n)
local now = nil
local acks = {}
local rejects = 0
local out = {}
for i = 1, n do
  local row = batch[i]
  local entry, kind, outcome, record = row[ENTRY], row[KIND], row[OUTCOME], row[RECORD]
  local k_id = nil
  if kind == 'r' then
    rejects = rejects + 1
    k_id = KEYS[3 + rejects]
  end
  if not pending(entry) then
    out[i] = 'fenced'
  else
    if kind == 'f' then
      redis.call('XADD', KEYS[2], '*', 'p', ARGV[6 + i])
    else
      now = now or now_ms()
      outcome[#outcome + 1] = 'at'
      outcome[#outcome + 1] = now
      redis.call('XADD', KEYS[3], '*', unpack(outcome))
      record_unless_decided(k_id, record, ttl)
    end
    acks[#acks + 1] = entry
    out[i] = 'ok'
  end
end
ack(stream, group, acks)
return out
