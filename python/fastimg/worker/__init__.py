"""gpu-image-worker: the Redis image worker built on the fastimg kernels."""
