"""The gateway's benchmark: a fast fake upstream, load generators and the orchestrator."""
