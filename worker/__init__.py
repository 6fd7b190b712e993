"""The worker runtime: heartbeat, fetch, execute, acknowledge."""
