"""The runtime: framework-free HTTP types, the Bot, the webhook pipeline, workers, stores,
the outbox and sending."""
