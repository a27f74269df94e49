"""The listener process: polls the chain from a checkpoint and enqueues operations."""
