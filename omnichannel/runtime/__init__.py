"""The runtime: framework-free HTTP types, the Bot, runners, stores, the outbox and sending."""
