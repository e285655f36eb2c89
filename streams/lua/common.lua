-- Prepended to the scripts that decide entries (see streams/scripts.py).
-- fence(...) reads, in one call, which entries of the batch's id range [lo, hi] are
-- pending for this consumer, and returns a predicate: is this entry still ours? A
-- full reply may have missed some, which are then looked up one by one.
local function fence(stream, group, consumer, lo, hi, n)
  local limit = 2 * n + 64
  local mine = {}
  local pel = redis.call('XPENDING', stream, group, lo, hi, limit, consumer)
  for _, p in ipairs(pel) do
    mine[p[1]] = true
  end
  local complete = #pel < limit
  return function(entry)
    if mine[entry] then
      return true
    end
    if complete then
      return false
    end
    local one = redis.call('XPENDING', stream, group, entry, entry, 1)
    return #one > 0 and one[1][2] == consumer
  end
end

-- Acknowledge entries in slices: unpack() is bounded by the Lua stack.
local function ack(stream, group, ids)
  for first = 1, #ids, 1000 do
    redis.call('XACK', stream, group, unpack(ids, first, math.min(#ids, first + 999)))
  end
end


-- Milliseconds on the server's clock, as a string (the streams' 'at' field).
local function now_ms()
  local t = redis.call('TIME')
  return tostring(t[1] * 1000 + math.floor(t[2] / 1000))
end

-- Write the outcome of one ingress entry where its submitter waits: a list of exactly
-- that one element (DEL first, whatever the key held), expiring after ttl ms.
local function put_outcome(key, record, ttl)
  redis.call('DEL', key)
  redis.call('RPUSH', key, record)
  redis.call('PEXPIRE', key, ttl)
end
