-- Settle a batch of requests: each one's hold replaced by what it cost. Settling twice changes
-- nothing; a counter gone (its period over) is skipped; a hold that had expired (counted as
-- spent meanwhile) has the spend corrected by the difference.
-- pcall around each claim: a key Redis refuses skips that claim, not the rest of the batch.
--
-- KEYS, two per claim of each settle in turn (reserve.lua's layout).
-- ARGV, per settle: lease, reserved, cost, number of claims, then per claim its soft limit
-- (nano-USD; -1 = none).
-- Returns {settle, claim, spent, ...} for each claim whose spend crossed its soft limit for the
-- first time this period (noted in the counter, so once across replicas).

local crossed = {}

-- A number as Redis takes it: Lua would write 1e15 as "1e+15", which HINCRBY refuses.
local function int(n)
  return string.format('%d', n)
end

local function settle(counter, holds, lease, reserved, cost, soft)
  if redis.call('EXISTS', counter) == 0 then
    return false
  end
  local field = 'h:' .. lease
  local mark = redis.call('HGET', counter, field)
  if not mark then
    return false
  end
  if redis.call('ZREM', holds, lease) == 1 then
    redis.call('HINCRBY', counter, 'held', int(-reserved))
    redis.call('HINCRBY', counter, 'spent', int(cost))
  elseif mark == 'x' then
    redis.call('HINCRBY', counter, 'spent', int(cost - reserved))
  end
  redis.call('HDEL', counter, field)
  if soft < 0 then
    return false
  end
  local spent = tonumber(redis.call('HGET', counter, 'spent')) or 0
  if spent >= soft and redis.call('HSETNX', counter, 'soft', 1) == 1 then
    return spent
  end
  return false
end

local key = 0
local arg = 1
local index = 0
while arg <= #ARGV do
  index = index + 1
  local lease, reserved, cost = ARGV[arg], tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
  local claims = tonumber(ARGV[arg + 3])
  for claim = 1, claims do
    local soft = tonumber(ARGV[arg + 3 + claim])
    local ok, spent = pcall(settle, KEYS[key + 1], KEYS[key + 2], lease, reserved, cost, soft)
    if ok and spent then
      crossed[#crossed + 1] = index
      crossed[#crossed + 1] = claim
      crossed[#crossed + 1] = spent
    end
    key = key + 2
  end
  arg = arg + 4 + claims
end
return crossed
