"""The scheduler process: enqueues reconciliation jobs on schedules; does no work itself."""
