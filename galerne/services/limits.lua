-- Galerne rate limits: one atomic step on a project's buckets, shared by every replica.
-- KEYS: 1 requests bucket (hash), 2 tokens bucket (hash), 3 concurrency leases (sorted set by expiry, ms)
-- ARGV[1] = "acquire": rpm, tpm, max_concurrent (-1 = unlimited), num_tokens, lease_id, lease_ttl_ms
--   returns {admitted (1/0), reason (0 ok, 1 requests, 2 tokens, 3 concurrency), retry_after_ms,
--            remaining requests, remaining tokens}
-- ARGV[1] = "release": tpm (-1 = unlimited), refund (may be negative), lease_id
-- Redis's own clock (TIME) is used, so replicas with skewed clocks still share one bucket.
local idle_ttl_ms = 120000
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_ms = math.floor(now * 1000)

local function refilled(key, capacity)
  local state = redis.call('HMGET', key, 'level', 'updated')
  local level, updated = tonumber(state[1]), tonumber(state[2])
  if level == nil then
    return capacity
  end
  return math.min(capacity, level + (now - updated) * capacity / 60)
end

local function store(key, level)
  redis.call('HSET', key, 'level', tostring(level), 'updated', tostring(now))
  redis.call('PEXPIRE', key, idle_ttl_ms)
end

if ARGV[1] == 'acquire' then
  local rpm, tpm, max_concurrent = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local num_tokens, lease_id, lease_ttl_ms = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
  local requests, tokens = 0, 0
  if rpm >= 0 then requests = refilled(KEYS[1], rpm) end
  if tpm >= 0 then tokens = refilled(KEYS[2], tpm) end
  if rpm >= 0 and requests < 1 then
    return {0, 1, math.ceil((1 - requests) * 60000 / rpm), math.floor(requests), math.floor(tokens)}
  end
  if tpm >= 0 and tokens < num_tokens then
    return {0, 2, math.ceil((num_tokens - tokens) * 60000 / tpm), math.floor(requests), math.floor(tokens)}
  end
  if max_concurrent >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
    if redis.call('ZCARD', KEYS[3]) >= max_concurrent then
      return {0, 3, 1000, math.floor(requests), math.floor(tokens)}
    end
    redis.call('ZADD', KEYS[3], now_ms + lease_ttl_ms, lease_id)
    redis.call('PEXPIRE', KEYS[3], lease_ttl_ms)
  end
  if rpm >= 0 then
    requests = requests - 1
    store(KEYS[1], requests)
  end
  if tpm >= 0 then
    tokens = tokens - num_tokens
    store(KEYS[2], tokens)
  end
  return {1, 0, 0, math.floor(requests), math.floor(tokens)}
end

if ARGV[1] == 'release' then
  local tpm, refund, lease_id = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
  redis.call('ZREM', KEYS[3], lease_id)
  if tpm >= 0 and redis.call('EXISTS', KEYS[2]) == 1 then
    store(KEYS[2], math.min(tpm, refilled(KEYS[2], tpm) + refund))
  end
  return 1
end

return redis.error_reply('unknown mode ' .. tostring(ARGV[1]))
