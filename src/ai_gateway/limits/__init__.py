"""How much a caller may use: requests, tokens and parallel requests per key and per team,
counted in memory (one process) or in Redis (several)."""
