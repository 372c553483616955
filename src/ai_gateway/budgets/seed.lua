-- Start a counter from the ledger's sum, only if no replica has started it yet (SET NX).
-- KEYS[1]: the counter hash. ARGV: spent (nano-USD), expire_at_ms (0 = idle_ttl_ms), idle_ttl_ms.
-- Returns 1 if this call started it, 0 if it existed.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'held', 0)
local expire_at = tonumber(ARGV[2])
if expire_at > 0 then
  redis.call('PEXPIREAT', KEYS[1], expire_at)
else
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return 1
