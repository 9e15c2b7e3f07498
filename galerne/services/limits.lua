-- Galerne rate limits: each call is one atomic step on one project's buckets, shared by every replica.
-- KEYS[1] requests bucket, KEYS[2] tokens bucket (hashes: level, updated in seconds),
-- KEYS[3] concurrency leases (sorted set: lease id scored by its expiry in ms, so a dead replica's places lapse).
--
-- ARGV[1] = 'acquire', then rpm, tpm, max_concurrent (-1 = unlimited), num_tokens, lease_id, lease_ttl_ms
--   returns {is_admitted (1/0), shortage (0 none, 1 requests, 2 tokens, 3 concurrency), retry_after_ms,
--            floor(remaining requests), floor(remaining tokens)}: integers, as Redis truncates Lua numbers.
-- ARGV[1] = 'check', then rpm, tpm, max_concurrent: what 'acquire' of one token would answer, taking nothing
--   (a cheap refusal before a request's expensive preparation); same reply.
-- ARGV[1] = 'release', then tpm (-1 = unlimited), refund (negative takes the excess), lease_id
--   returns 1
-- ARGV[1] = 'renew', then lease_ttl_ms, lease ids...: pushes the expiry of those of the ids still held
--   (a released or lapsed lease is not brought back); returns how many were renewed.
--
-- The clock is Redis's TIME, so replicas with skewed clocks share one bucket. Buckets expire after
-- IDLE_TTL_MS without use (a bucket in debt lives until it has refilled).
if redis.replicate_commands then
  redis.replicate_commands()  -- writes after TIME need effects replication before Redis 5 (the default since)
end

local IDLE_TTL_MS = 120000
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local now_ms = math.floor(now * 1000)

local function ms_to_refill(deficit, per_minute)
  if per_minute <= 0 then
    return 60000
  end
  return math.ceil(deficit * 60000 / per_minute)
end

-- The bucket's level refilled to now and clamped to `capacity`; a bucket never seen (or expired) is full.
local function refilled(key, capacity)
  local state = redis.call('HMGET', key, 'level', 'updated')
  local level, updated = tonumber(state[1]), tonumber(state[2])
  if level == nil or updated == nil then
    return capacity
  end
  return math.min(capacity, level + math.max(0, now - updated) * capacity / 60)
end

local function store(key, level, capacity)
  -- %.17g keeps every bit of a double; tostring would round the timestamp to 0.1 ms.
  redis.call('HSET', key, 'level', string.format('%.17g', level), 'updated', string.format('%.17g', now))
  redis.call('PEXPIRE', key, math.max(IDLE_TTL_MS, ms_to_refill(capacity - level, capacity) + 1000))
end

-- The leases set outlives its latest lease, and no other replica's lease is cut short by ours.
local function keep_leases_for(ttl_ms)
  if redis.call('PTTL', KEYS[3]) < ttl_ms then
    redis.call('PEXPIRE', KEYS[3], ttl_ms)
  end
end

-- The refusal for `num_tokens` now, or nil when every limit has room; reads only (expired leases aside).
local function shortage(rpm, tpm, max_concurrent, num_tokens, requests, tokens)
  if rpm >= 0 and requests < 1 then
    return {0, 1, ms_to_refill(1 - requests, rpm), math.floor(requests), math.floor(tokens)}
  end
  if tpm >= 0 and tokens < num_tokens then
    return {0, 2, ms_to_refill(num_tokens - tokens, tpm), math.floor(requests), math.floor(tokens)}
  end
  if max_concurrent >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
    if redis.call('ZCARD', KEYS[3]) >= max_concurrent then
      return {0, 3, 1000, math.floor(requests), math.floor(tokens)}
    end
  end
  return nil
end

if ARGV[1] == 'acquire' or ARGV[1] == 'check' then
  local rpm, tpm, max_concurrent = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local num_tokens = ARGV[1] == 'check' and 1 or tonumber(ARGV[5])
  local requests, tokens = 0, 0
  if rpm >= 0 then requests = refilled(KEYS[1], rpm) end
  if tpm >= 0 then tokens = refilled(KEYS[2], tpm) end
  local refused = shortage(rpm, tpm, max_concurrent, num_tokens, requests, tokens)
  if refused then
    return refused
  end
  if ARGV[1] == 'check' then
    return {1, 0, 0, math.floor(requests), math.floor(tokens)}
  end
  local lease_id, lease_ttl_ms = ARGV[6], tonumber(ARGV[7])
  if max_concurrent >= 0 then
    redis.call('ZADD', KEYS[3], now_ms + lease_ttl_ms, lease_id)
    keep_leases_for(lease_ttl_ms)
  end
  if rpm >= 0 then
    requests = requests - 1
    store(KEYS[1], requests, rpm)
  end
  if tpm >= 0 then
    tokens = tokens - num_tokens
    store(KEYS[2], tokens, tpm)
  end
  return {1, 0, 0, math.floor(requests), math.floor(tokens)}
end

if ARGV[1] == 'release' then
  local tpm, refund, lease_id = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
  redis.call('ZREM', KEYS[3], lease_id)
  -- A positive refund to an expired bucket changes nothing (it is full); a debt must still be recorded.
  if tpm >= 0 and refund ~= 0 and (refund < 0 or redis.call('EXISTS', KEYS[2]) == 1) then
    store(KEYS[2], math.min(tpm, refilled(KEYS[2], tpm) + refund), tpm)
  end
  return 1
end

if ARGV[1] == 'renew' then
  local lease_ttl_ms = tonumber(ARGV[2])
  local num_renewed = 0
  for index = 3, #ARGV do
    local expiry = redis.call('ZSCORE', KEYS[3], ARGV[index])
    if expiry and tonumber(expiry) > now_ms then
      redis.call('ZADD', KEYS[3], now_ms + lease_ttl_ms, ARGV[index])
      num_renewed = num_renewed + 1
    end
  end
  if num_renewed > 0 then
    keep_leases_for(lease_ttl_ms)
  end
  return num_renewed
end

return redis.error_reply('galerne limits.lua: unknown mode ' .. tostring(ARGV[1]))
