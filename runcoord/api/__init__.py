"""The agent API: turns in through a PostgreSQL outbox, runs out from the projection, per-tenant
keys, and the provider's webhooks. See runcoord/api/README.md."""
