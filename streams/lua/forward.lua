-- Normalize's one atomic step for a batch of ingress entries: for each entry still
-- pending for this consumer, forward it to the normalized stream or record its
-- rejection, and acknowledge it. An entry no longer ours (claimed while we were slow)
-- is skipped: its new owner decides it.
--
-- KEYS[1] ingress stream   KEYS[2] normalized stream   KEYS[3] outcomes stream
-- KEYS[3+i] id record of entry i (any key for forwarded entries)
-- ARGV[1] group   ARGV[2] consumer   ARGV[3] id record ttl (ms)   ARGV[4] n
-- then per entry, 4 values: ingress id, kind ('f' forward, 'r' reject), payload, record
--   forward: payload = msgpack of the normalized patch, record = ''
--   reject:  payload = outcome fields as a flat JSON array [name, value, ...] without
--            'at', record = id record JSON
-- Returns one status per entry: 'ok' or 'fenced'.
local group, consumer, ttl, n = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 1, n do
  local base = 4 + (i - 1) * 4
  local entry, kind, payload, record = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local pel = redis.call('XPENDING', KEYS[1], group, entry, entry, 1)
  if #pel == 0 or pel[1][2] ~= consumer then
    out[i] = 'fenced'
  else
    if kind == 'f' then
      redis.call('XADD', KEYS[2], '*', 'p', payload)
    else
      local flat = cjson.decode(payload)
      local t = redis.call('TIME')
      flat[#flat + 1] = 'at'
      flat[#flat + 1] = tostring(t[1] * 1000 + math.floor(t[2] / 1000))
      redis.call('XADD', KEYS[3], '*', unpack(flat))
      -- A decided patch keeps its record (it has a digest): a later malformed
      -- resubmission of its id must not hide what happened to it.
      local prev = redis.call('LINDEX', KEYS[3 + i], 0)
      local digest = prev and cjson.decode(prev).digest
      if type(digest) ~= 'string' or digest == '' then
        redis.call('DEL', KEYS[3 + i])
        redis.call('RPUSH', KEYS[3 + i], record)
        redis.call('PEXPIRE', KEYS[3 + i], ttl)
      end
    end
    redis.call('XACK', KEYS[1], group, entry)
    out[i] = 'ok'
  end
end
return out
