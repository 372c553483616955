-- Reserve a request's most cost on every budget of its key and team, only if each has room:
-- one atomic step, so that replicas never share out the same remainder twice.
--
-- KEYS, two per claim: the counter hash (`spent`, `held`, `h:<lease>` = nano-USD held or "x"
-- once expired, `soft` once the soft limit was noted) and its holds zset (lease -> expiry, ms).
-- ARGV: lease, cost (nano-USD), hold_ttl_ms, idle_ttl_ms, then per claim: limit (nano-USD) and
-- expire_at_ms (the counter's end of life; 0 = a `total` counter, kept idle_ttl_ms past its use).
-- Returns {-1, i, ...}: claims whose counter is missing (seed them, then call again);
-- {0, i, used}: claim i has no room (used = spent + held); {1}: held on every claim.

local lease = ARGV[1]
local cost = tonumber(ARGV[2])
local hold_ttl = tonumber(ARGV[3])
local idle_ttl = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local claims = #KEYS / 2
-- Bounds the expired holds one call releases (the rest go on the next call).
local CHUNK = 256

-- A number as Redis takes it: Lua would write 1e15 as "1e+15", which HINCRBY refuses.
local function int(n)
  return string.format('%d', n)
end

local missing = {-1}
for i = 1, claims do
  if redis.call('EXISTS', KEYS[2 * i - 1]) == 0 then
    missing[#missing + 1] = i
  end
end
if #missing > 1 then
  return missing
end

-- A hold whose request never settled (its replica died) counts as spent; its mark tells its
-- settle, should it come after all, to correct the spend instead.
local function release_expired(counter, holds)
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now, 'LIMIT', 0, CHUNK)
  for _, held_lease in ipairs(expired) do
    local field = 'h:' .. held_lease
    local amount = tonumber(redis.call('HGET', counter, field)) or 0
    redis.call('HINCRBY', counter, 'held', int(-amount))
    redis.call('HINCRBY', counter, 'spent', int(amount))
    redis.call('HSET', counter, field, 'x')
    redis.call('ZREM', holds, held_lease)
  end
end

for i = 1, claims do
  local counter, holds = KEYS[2 * i - 1], KEYS[2 * i]
  release_expired(counter, holds)
  local used = (tonumber(redis.call('HGET', counter, 'spent')) or 0)
    + (tonumber(redis.call('HGET', counter, 'held')) or 0)
  local limit = tonumber(ARGV[3 + 2 * i])
  if used >= limit or used + cost > limit then
    return {0, i, used}
  end
end

for i = 1, claims do
  local counter, holds = KEYS[2 * i - 1], KEYS[2 * i]
  redis.call('HINCRBY', counter, 'held', int(cost))
  redis.call('HSET', counter, 'h:' .. lease, int(cost))
  redis.call('ZADD', holds, int(now + hold_ttl), lease)
  local expire_at = tonumber(ARGV[4 + 2 * i])
  for _, key in ipairs({counter, holds}) do
    if expire_at > 0 then
      redis.call('PEXPIREAT', key, int(expire_at))
    else
      redis.call('PEXPIRE', key, int(idle_ttl))
    end
  end
end
return {1}
