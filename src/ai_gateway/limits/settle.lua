-- Settle a batch of requests: charge each its tokens used instead of the estimate (while the
-- charge is still in the window) and end its parallel lease. Settling twice changes nothing.
-- pcall, not call: a key Redis refuses (of another type, under a shared prefix) skips that one
-- settle instead of aborting the rest of the batch.
--
-- KEYS, three per subject of each settle in turn: token charges zset, token weights hash,
-- parallel leases zset (the layout of admit.lua).
-- ARGV: window_ms, then per settle: lease, tokens used, number of subjects.

local window = tonumber(ARGV[1]) * 1000
local clock = redis.pcall('TIME')
local cutoff = tonumber(clock[1]) * 1000000 + tonumber(clock[2]) - window
local SUM = '_sum'

local function settle(charges, weights, leases, lease, tokens)
  local at = tonumber(redis.pcall('ZSCORE', charges, lease))
  if at and at > cutoff then
    local charged = tonumber(redis.pcall('HGET', weights, lease))
    if charged then
      redis.pcall('HSET', weights, lease, tokens)
      redis.pcall('HINCRBY', weights, SUM, tokens - charged)
    end
  end
  redis.pcall('ZREM', leases, lease)
end

local key = 0
local arg = 2
while arg <= #ARGV do
  local lease, tokens, subjects = ARGV[arg], tonumber(ARGV[arg + 1]), tonumber(ARGV[arg + 2])
  for _ = 1, subjects do
    settle(KEYS[key + 1], KEYS[key + 2], KEYS[key + 3], lease, tokens)
    key = key + 3
  end
  arg = arg + 3
end
return 0
