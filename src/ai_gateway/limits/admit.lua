-- Check every limit of every subject and, only if all of them fit, record the request against
-- each: one atomic step, timed by the Redis clock so that every replica counts alike.
--
-- KEYS, four per subject: requests zset (lease -> admitted at, us), token charges zset
-- (lease -> admitted at, us), token weights hash (lease -> tokens, plus the running sum under
-- "_sum"), parallel leases zset (lease -> expires at, us).
-- ARGV: window_ms, lease_ttl_ms, tokens (this request's estimate), lease, then three limits per
-- subject (rpm, tpm, parallel; -1 = not limited).
-- Returns seven integers per subject: requests used, reset ms, wait ms; tokens used, reset ms,
-- wait ms; parallel leases open. Time is kept in microseconds, answered in whole ms rounded up.

local window_ms = tonumber(ARGV[1])
local lease_ttl_ms = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local lease = ARGV[4]
local window = window_ms * 1000
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local cutoff = now - window
local SUM = '_sum'
-- Bounds the arguments unpack() passes at once (Lua's C stack holds about 8000).
local CHUNK = 256
-- The most token charges one refusal reads (a multiple of CHUNK; memory.py's SCAN_LIMIT).
local SCAN_LIMIT = 1024

local function ms_until(at)
  return math.ceil((at - now) / 1000)
end

local function oldest_reset(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first == 0 then
    return 0
  end
  return ms_until(tonumber(first[2]) + window)
end

local function weights_of(weights, members)
  local total = 0
  for _, weight in ipairs(redis.call('HMGET', weights, unpack(members))) do
    total = total + (tonumber(weight) or 0)
  end
  return total
end

local function requests_count(key, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
  local used = redis.call('ZCARD', key)
  local wait = 0
  if limit >= 1 and used + 1 > limit then
    local entry = redis.call('ZRANGE', key, used - limit, used - limit, 'WITHSCORES')
    wait = ms_until(tonumber(entry[2]) + window)
  end
  return used, oldest_reset(key), wait
end

local function prune_charges(charges, weights)
  local pruned = false
  while true do
    local expired = redis.call('ZRANGEBYSCORE', charges, '-inf', cutoff, 'LIMIT', 0, CHUNK)
    if #expired == 0 then
      break
    end
    local dropped = weights_of(weights, expired)
    redis.call('ZREM', charges, unpack(expired))
    redis.call('HDEL', weights, unpack(expired))
    redis.call('HINCRBY', weights, SUM, -dropped)
    pruned = true
  end
  -- With no charge left, start the sum afresh (nothing else would ever remove it).
  if pruned and redis.call('EXISTS', charges) == 0 then
    redis.call('DEL', weights)
  end
end

-- When the charge was made whose leaving frees `need` tokens, oldest first. At most
-- SCAN_LIMIT charges are read (a refusal must not cost Redis a walk of a huge window): past
-- them, the newest charge's time, when everything counted now has left (later, never early).
local function freeing_at(charges, weights, need)
  local freed = 0
  local start = 0
  while start < SCAN_LIMIT do
    local entries = redis.call('ZRANGE', charges, start, start + CHUNK - 1, 'WITHSCORES')
    if #entries == 0 then
      return now -- unreachable while the sum is the sum of the weights
    end
    for j = 1, #entries, 2 do
      freed = freed + (tonumber(redis.call('HGET', weights, entries[j])) or 0)
      if freed >= need then
        return tonumber(entries[j + 1])
      end
    end
    start = start + CHUNK
  end
  return tonumber(redis.call('ZRANGE', charges, -1, -1, 'WITHSCORES')[2])
end

local function tokens_count(charges, weights, limit)
  prune_charges(charges, weights)
  local used = tonumber(redis.call('HGET', weights, SUM)) or 0
  local wait = 0
  if cost <= limit and used + cost > limit then
    wait = ms_until(freeing_at(charges, weights, used + cost - limit) + window)
  end
  return used, oldest_reset(charges), wait
end

local function parallel_count(key)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZCARD', key)
end

local function record(base, rpm, tpm, parallel)
  if rpm >= 0 then
    redis.call('ZADD', KEYS[base + 1], now, lease)
    redis.call('PEXPIRE', KEYS[base + 1], window_ms)
  end
  if tpm >= 0 then
    redis.call('ZADD', KEYS[base + 2], now, lease)
    redis.call('HSET', KEYS[base + 3], lease, cost)
    redis.call('HINCRBY', KEYS[base + 3], SUM, cost)
    redis.call('PEXPIRE', KEYS[base + 2], window_ms)
    redis.call('PEXPIRE', KEYS[base + 3], window_ms)
  end
  if parallel >= 0 then
    redis.call('ZADD', KEYS[base + 4], now + lease_ttl_ms * 1000, lease)
    redis.call('PEXPIRE', KEYS[base + 4], lease_ttl_ms)
  end
end

local counts = {}
local fits = true
local subjects = #KEYS / 4
for i = 0, subjects - 1 do
  local base = i * 4
  local rpm = tonumber(ARGV[5 + i * 3])
  local tpm = tonumber(ARGV[6 + i * 3])
  local parallel = tonumber(ARGV[7 + i * 3])
  local r_used, r_reset, r_wait, t_used, t_reset, t_wait, p_used = 0, 0, 0, 0, 0, 0, 0
  if rpm >= 0 then
    r_used, r_reset, r_wait = requests_count(KEYS[base + 1], rpm)
    fits = fits and r_used + 1 <= rpm
  end
  if tpm >= 0 then
    t_used, t_reset, t_wait = tokens_count(KEYS[base + 2], KEYS[base + 3], tpm)
    fits = fits and t_used + cost <= tpm
  end
  if parallel >= 0 then
    p_used = parallel_count(KEYS[base + 4])
    fits = fits and p_used + 1 <= parallel
  end
  for _, value in ipairs({r_used, r_reset, r_wait, t_used, t_reset, t_wait, p_used}) do
    counts[#counts + 1] = value
  end
end

if fits then
  for i = 0, subjects - 1 do
    record(i * 4, tonumber(ARGV[5 + i * 3]), tonumber(ARGV[6 + i * 3]), tonumber(ARGV[7 + i * 3]))
  end
end
return counts
