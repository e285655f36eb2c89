-- Execute's one atomic step for a batch of decided patches. First every id record of
-- the batch is read and checked (its type, its JSON), so that a damaged one fails the
-- call before any write (Lua does not roll back). Then for each patch, in order,
-- everything is checked before its first write:
--   fence: the normalized entry is still pending for this consumer, else 'fenced';
--   idempotency: if the patch id is owned by a decided patch, a replay (same payload)
--     gets the same outcome again ('dup': 'duplicate' of an applied patch, else the
--     same rejection or noop), another payload returns 'reuse' untouched;
--   CAS: the document head (revision, hash and the src of the patch that made it) is
--     the one the decision was computed on, else 'cas'; after a 'cas' every later patch
--     of that document in the batch is 'cas' too (it was decided on top of the failed
--     one). The src makes the check exact: equal content reached through other
--     revisions would rebase later patches through the wrong ops.
-- Then it writes the document head, the revision, the index, the outcome (in the
-- outcomes stream and in the ingress entry's outcome key, where its submitter waits)
-- and the id record: the first patch decided under an id (commit, rejection or noop)
-- owns it; a final rejection ('x', id_reuse) never writes it. The entries of patches
-- that got an id record are acknowledged together at the end: should the script stop
-- half way, a redelivered entry finds its own id record and is only acknowledged. The
-- others (a replay's answer, a final rejection) leave no record of their entry, so they
-- are acknowledged at once, with their outcome.
--
-- KEYS[1] normalized stream  KEYS[2] revisions  KEYS[3] outcomes  KEYS[4] docs set
-- KEYS[4+4i-3..4+4i] per patch i: document head hash, revision index list, id record,
--   outcome key of its ingress entry
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
local RECORD = 8    -- the outcome as JSON plus digest: outcome key, and id record if owned
local REVISION = 9  -- revision fields [name, value, ...] without 'at' (commit), else {}
local HASH = 10     -- new content hash (commit), else ''
local LINES = 11    -- new line count (integer; commit), else 0
local PREVSRC = 12  -- src of the patch that made the head revision ('' for revision 0)
local DOC = 13      -- the document
-- ARGV[8] outcome key ttl (ms)
-- The outcome and revision fields come from streams.codec.event_fields; the script
-- appends 'at' (server clock). The answer to a replay is the one outcome built here,
-- from the owner's id record, in the field order of streams.schema.Outcome.
-- Returns a flat array: per patch its status and rev; status is one of
-- 'ok', 'fenced', 'cas', 'dup', 'reuse' (rev is then the first src instead).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local ttl, empty, out_ttl = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[8])
local batch = cmsgpack.unpack(ARGV[7])
local n = #batch
if #KEYS ~= 4 + 4 * n or not ttl or not out_ttl then
  return redis.error_reply('ERR commit: ' .. #KEYS .. ' keys for ' .. n .. ' patches')
end

-- The owner of an id: its record, if one has a digest. A record without one (written by
-- an older version for a malformed entry) owns nothing. Returns owner, or nil and an
-- error for a record that is not a list holding an outcome as JSON; a third value true
-- when there is no record at all.
local function read_owner(key)
  local raw = redis.pcall('LINDEX', key, 0)
  if type(raw) == 'table' and raw.err then
    return nil, raw.err
  end
  if not raw then
    return nil, nil, true
  end
  local ok, record = pcall(cjson.decode, raw)
  if not ok or type(record) ~= 'table' then
    return nil, 'not JSON'
  end
  if type(record.digest) ~= 'string' or record.digest == '' then
    return nil
  end
  if type(record.src) ~= 'string' or type(record.rev) ~= 'number' or type(record.id) ~= 'string'
      or type(record.doc) ~= 'string' or type(record.status) ~= 'string'
      or (type(record.code) == 'string' and type(record.message) ~= 'string') then
    return nil, 'not an outcome'
  end
  return record
end

local owners = {}
local absent = {}  -- no id record at all: writing one needs no DEL first
for i = 1, n do
  local k_id = KEYS[4 + 4 * i - 1]
  local owner, err, none = read_owner(k_id)
  if err then
    return redis.error_reply('ERR commit: id record ' .. k_id .. ': ' .. err)
  end
  owners[i] = owner
  absent[i] = none
end

-- JSON of a replay's answer, for its outcome key; written out because cjson.encode
-- prints numbers with 14 significant digits.
local function answer_json(owner, status, src, at, digest)
  local parts = {'{"id":', cjson.encode(owner.id), ',"doc":', cjson.encode(owner.doc),
    ',"status":', cjson.encode(status), ',"rev":', string.format('%d', owner.rev)}
  if type(owner.code) == 'string' then
    parts[#parts + 1] = ',"code":' .. cjson.encode(owner.code)
    parts[#parts + 1] = ',"message":' .. cjson.encode(owner.message)
  end
  parts[#parts + 1] = ',"src":' .. cjson.encode(src) .. ',"at":' .. at
  parts[#parts + 1] = ',"digest":' .. cjson.encode(digest) .. '}'
  return table.concat(parts)
end

local failed = {}
local written = {}
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
  local base = 4 + 4 * i
  local k_doc, k_idx, k_id, k_out = KEYS[base - 3], KEYS[base - 2], KEYS[base - 1], KEYS[base]
  local status, rev = 'ok', ''

  if not pending(entry) then
    status = 'fenced'
  end

  local owner = owners[i]
  if written[k_id] then  -- an earlier patch of this call took the id (read what it wrote)
    owner = read_owner(k_id)
  end
  if status == 'ok' and kind ~= 'x' and owner then
    if owner.src == src then
      acks[#acks + 1] = entry  -- this very entry, decided already
      status, rev = 'dup', string.format('%d', owner.rev)
    elseif owner.digest == digest then
      -- A replay gets the same answer: a duplicate of an applied patch points at its
      -- revision; a replay of a rejection or noop gets that outcome again.
      local answer = owner.status
      if answer == 'committed' then
        answer = 'duplicate'
      end
      local fields = {'id', owner.id, 'doc', owner.doc, 'status', answer,
        'rev', string.format('%d', owner.rev)}
      if type(owner.code) == 'string' then
        fields[#fields + 1] = 'code'
        fields[#fields + 1] = owner.code
        fields[#fields + 1] = 'message'
        fields[#fields + 1] = owner.message
      end
      fields[#fields + 1] = 'src'
      fields[#fields + 1] = src
      redis.call('XADD', KEYS[3], '*', unpack(add_at(fields)))
      put_outcome(k_out, answer_json(owner, answer, src, now, digest), out_ttl)
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
    put_outcome(k_out, record, out_ttl)
    if kind ~= 'x' then  -- not owned (checked above): this patch takes the id
      if absent[i] and not written[k_id] then
        redis.call('RPUSH', k_id, record)
        redis.call('PEXPIRE', k_id, ttl)
      else
        put_outcome(k_id, record, ttl)  -- a record without a digest gives way
      end
      written[k_id] = true
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
