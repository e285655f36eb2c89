-- Execute's one atomic step for a batch of decided patches. For each patch, in order,
-- everything is checked before its first write (Lua does not roll back):
--   fence: the normalized entry is still pending for this consumer, else 'fenced';
--   idempotency: if the patch id is already committed, the same payload gets a
--     'duplicate' outcome ('dup'), another payload returns 'reuse' untouched;
--   CAS: the document head is the revision the decision was computed on, else 'cas'.
-- Then it writes the document head, the revision, the index, the outcome and the id
-- record, and acknowledges the normalized entry: all or nothing, for that patch.
--
-- KEYS[1] normalized stream  KEYS[2] revisions  KEYS[3] outcomes  KEYS[4] docs set
-- KEYS[4+3i-2..4+3i] per patch i: document head hash, revision index list, id record
-- ARGV[1] group  ARGV[2] consumer  ARGV[3] id record ttl (ms)  ARGV[4] n
-- then per patch, 10 values:
--   entry   normalized stream id
--   kind    'c' commit, 'r' reject, 'n' noop, 'x' final reject (no CAS, no id check)
--   head    revision the decision was computed on (decimal)
--   src     ingress entry id
--   digest  payload digest
--   outcome flat JSON array [name, value, ...] of outcome fields, without 'at'
--   record  id record JSON (the outcome plus digest)
--   revision flat JSON array of revision fields without 'at', starting 'doc', name
--           (commit), else ''
--   hash    new content hash (commit), else ''
--   lines   new line count (commit), else ''
-- Returns per patch {status, rev, revision stream id}; status is one of
-- 'ok', 'fenced', 'cas', 'dup', 'reuse' (rev is then the first src instead).
local group, consumer, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tostring(t[1] * 1000 + math.floor(t[2] / 1000))
local out = {}

local function add_at(flat)
  flat[#flat + 1] = 'at'
  flat[#flat + 1] = now
  return flat
end

for i = 1, n do
  local a = 4 + (i - 1) * 10
  local entry, kind, head = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local src, digest = ARGV[a + 4], ARGV[a + 5]
  local k_doc, k_idx, k_id = KEYS[4 + 3 * i - 2], KEYS[4 + 3 * i - 1], KEYS[4 + 3 * i]
  local status, rev, revid = 'ok', '', ''

  local pel = redis.call('XPENDING', KEYS[1], group, entry, entry, 1)
  if #pel == 0 or pel[1][2] ~= consumer then
    status = 'fenced'
  end

  local prev = nil
  if status == 'ok' and kind ~= 'x' then
    local raw = redis.call('LINDEX', k_id, 0)
    if raw then
      prev = cjson.decode(raw)
      if prev.status == 'committed' then
        if prev.digest == digest then
          if prev.src ~= src then
            local fields = {'id', prev.id, 'doc', prev.doc, 'status', 'duplicate',
                            'rev', string.format('%d', prev.rev), 'src', src}
            redis.call('XADD', KEYS[3], '*', unpack(add_at(fields)))
          end
          redis.call('XACK', KEYS[1], group, entry)
          status, rev = 'dup', string.format('%d', prev.rev)
        else
          status, rev = 'reuse', prev.src
        end
      end
    end
  end

  if status == 'ok' and kind ~= 'x' then
    local current = tonumber(redis.call('HGET', k_doc, 'rev') or '0')
    if current ~= head then
      status, rev = 'cas', tostring(current)
    end
  end

  if status == 'ok' then
    if kind == 'c' then
      rev = tostring(head + 1)
      revid = redis.call('XADD', KEYS[2], '*', unpack(add_at(cjson.decode(ARGV[a + 8]))))
      redis.call('HSET', k_doc, 'rev', rev, 'hash', ARGV[a + 9], 'lines', ARGV[a + 10])
      redis.call('RPUSH', k_idx, revid)
      if head == 0 then
        redis.call('SADD', KEYS[4], cjson.decode(ARGV[a + 8])[2])
      end
    else
      rev = tostring(head)
    end
    redis.call('XADD', KEYS[3], '*', unpack(add_at(cjson.decode(ARGV[a + 6]))))
    if kind == 'x' or prev == nil or prev.status ~= 'committed' then
      local record = redis.call('LINDEX', k_id, 0)
      if not record or cjson.decode(record).status ~= 'committed' then
        redis.call('DEL', k_id)
        redis.call('RPUSH', k_id, ARGV[a + 7])
        redis.call('PEXPIRE', k_id, ttl)
      end
    end
    redis.call('XACK', KEYS[1], group, entry)
  end
  out[i] = {status, rev, revid}
end
return out
