"""The `gpu-image-worker` command and its subcommands."""
