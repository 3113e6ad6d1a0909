"""The worker process: slots taking jobs from Redis, leases, recovery, metrics
and signals."""
