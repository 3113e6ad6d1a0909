"""The queue protocol: Redis keys, the job payload, the atomic moves between
lists, outcome records and status. Shared by producers, workers, serve and the
operator tools."""
