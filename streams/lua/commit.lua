-- Execute's one atomic step for a batch of decided patches. For each patch, in order,
-- everything is checked before its first write (Lua does not roll back):
--   fence: the normalized entry is still pending for this consumer, else 'fenced';
--   idempotency: if the patch id is owned by a decided patch, a replay (same payload)
--     gets the same outcome again ('dup': 'duplicate' of an applied patch, else the
--     same rejection or noop), another payload returns 'reuse' untouched;
--   CAS: the document head (revision, hash and the src of the patch that made it) is
--     the one the decision was computed on, else 'cas'; after a 'cas' every later patch
--     of that document in the batch is 'cas' too (it was decided on top of the failed
--     one). The src makes the check exact: equal content reached through other
--     revisions would rebase later patches through the wrong ops.
-- Then it writes the document head, the revision, the index, the outcome and the id
-- record. The entries of patches that got a record are acknowledged together at the
-- end: should the script stop half way, a redelivered entry finds its own id record and
-- is only acknowledged. The others (a replay's answer, a final rejection) leave no
-- record of their entry, so they are acknowledged at once, with their outcome.
--
-- KEYS[1] normalized stream  KEYS[2] revisions  KEYS[3] outcomes  KEYS[4] docs set
-- KEYS[4+3i-2..4+3i] per patch i: document head hash, revision index list, id record
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] id record ttl (ms)
-- ARGV[4] hash of the empty document (the head of a document without revisions)
-- ARGV[5] lowest and ARGV[6] highest normalized entry id of the batch
-- ARGV[7] msgpack array of rows, one per patch: a CommitRow (streams/scripts.py), read
-- through these positions, which follow that struct's field order:
local ENTRY = 1     -- normalized stream id
local KIND = 2      -- 'c' commit, 'r' reject, 'n' noop, 'x' final reject (no CAS, no id check)
local HEAD = 3      -- revision the decision was computed on (integer)
local PREV = 4      -- hash of that revision
local SRC = 5       -- ingress entry id
local DIGEST = 6    -- payload digest
local OUTCOME = 7   -- outcome fields [name, value, ...] without 'at'
local RECORD = 8    -- id record JSON (the outcome plus digest)
local REVISION = 9  -- revision fields [name, value, ...] without 'at' (commit), else {}
local HASH = 10     -- new content hash (commit), else ''
local LINES = 11    -- new line count (integer; commit), else 0
local PREVSRC = 12  -- src of the patch that made the head revision ('' for revision 0)
local DOC = 13      -- the document
-- The outcome and revision fields come from streams.codec.event_fields; the script
-- appends 'at' (server clock). The answer to a replay is the one outcome built here,
-- from the owner's id record, in the field order of streams.schema.Outcome.
-- Returns a flat array: per patch its status and rev; status is one of
-- 'ok', 'fenced', 'cas', 'dup', 'reuse' (rev is then the first src instead).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local ttl, empty = tonumber(ARGV[3]), ARGV[4]
local batch = cmsgpack.unpack(ARGV[7])
local n = #batch
local failed = {}
local acks = {}
local now = now_ms()
local out = {}

local pending = fence(stream, group, consumer, ARGV[5], ARGV[6], n)

local function add_at(flat)
  flat[#flat + 1] = 'at'
  flat[#flat + 1] = now
  return flat
end

for i = 1, n do
  local p = batch[i]
  local entry, kind, head, prevhash = p[ENTRY], p[KIND], p[HEAD], p[PREV]
  local src, digest, outcome, record = p[SRC], p[DIGEST], p[OUTCOME], p[RECORD]
  local revision, newhash, lines, prevsrc = p[REVISION], p[HASH], p[LINES], p[PREVSRC]
  local k_doc, k_idx, k_id = KEYS[4 + 3 * i - 2], KEYS[4 + 3 * i - 1], KEYS[4 + 3 * i]
  local status, rev = 'ok', ''

  if not pending(entry) then
    status = 'fenced'
  end

  -- The id is owned by the first patch decided under it (its record has a digest);
  -- records of malformed or dead-lettered entries have none and own nothing.
  local owner = nil
  local raw = redis.call('LINDEX', k_id, 0)
  if raw then
    local decoded = cjson.decode(raw)
    if type(decoded.digest) == 'string' and decoded.digest ~= '' then
      owner = decoded
    end
  end
  if status == 'ok' and kind ~= 'x' and owner then
    if owner.src == src then
      acks[#acks + 1] = entry  -- this very entry, decided already
      status, rev = 'dup', string.format('%d', owner.rev)
    elseif owner.digest == digest then
      -- A replay gets the same answer: a duplicate of an applied patch points at its
      -- revision; a replay of a rejection or noop gets that outcome again.
      local fields = {'id', owner.id, 'doc', owner.doc}
      if owner.status == 'committed' then
        fields[#fields + 1] = 'status'
        fields[#fields + 1] = 'duplicate'
      else
        fields[#fields + 1] = 'status'
        fields[#fields + 1] = owner.status
      end
      fields[#fields + 1] = 'rev'
      fields[#fields + 1] = string.format('%d', owner.rev)
      if type(owner.code) == 'string' then
        fields[#fields + 1] = 'code'
        fields[#fields + 1] = owner.code
        fields[#fields + 1] = 'message'
        fields[#fields + 1] = owner.message
      end
      fields[#fields + 1] = 'src'
      fields[#fields + 1] = src
      redis.call('XADD', KEYS[3], '*', unpack(add_at(fields)))
      redis.call('XACK', stream, group, entry)  -- no record of this src: ack with it
      status, rev = 'dup', string.format('%d', owner.rev)
    else
      status, rev = 'reuse', owner.src
    end
  end

  if status == 'ok' and kind ~= 'x' then
    local cur = redis.call('HMGET', k_doc, 'rev', 'hash', 'src')
    local current, currenthash = tonumber(cur[1] or '0'), cur[2] or empty
    if failed[k_doc] or current ~= head or currenthash ~= prevhash or (cur[3] or '') ~= prevsrc then
      failed[k_doc] = true
      status, rev = 'cas', string.format('%d', current)
    end
  end

  if status == 'ok' then
    if kind == 'c' then
      rev = string.format('%d', head + 1)
      local revid = redis.call('XADD', KEYS[2], '*', unpack(add_at(revision)))
      redis.call('HSET', k_doc, 'rev', rev, 'hash', newhash, 'lines', string.format('%d', lines),
        'src', src)
      redis.call('RPUSH', k_idx, revid)
      if head == 0 then
        redis.call('SADD', KEYS[4], p[DOC])
      end
    else
      rev = string.format('%d', head)
    end
    redis.call('XADD', KEYS[3], '*', unpack(add_at(outcome)))
    if kind ~= 'x' and not owner then
      if raw then  -- a record without a digest (a malformed entry's) gives way
        redis.call('DEL', k_id)
      end
      redis.call('RPUSH', k_id, record)
      redis.call('PEXPIRE', k_id, ttl)
      acks[#acks + 1] = entry
    else
      redis.call('XACK', stream, group, entry)  -- no record of this src: ack with it
    end
  end
  out[2 * i - 1] = status
  out[2 * i] = rev
end

ack(stream, group, acks)
return out
