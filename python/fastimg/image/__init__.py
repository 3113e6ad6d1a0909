"""The image pipeline: a job's bytes in, its WebP files out. Knows nothing of
Redis or the queue, so the `process` command, servers and benchmarks use it
as the worker does."""
