"""The store: PostgreSQL access and migrations, pool accounts, end-to-end accounting, positions,
dead letters, job runs, the gray-release setting and the Redis read-through cache."""
