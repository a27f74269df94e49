"""Coordination between processes: the listener-to-worker message contract, the shared request
budget, the leadership lease, the recovery of messages a dead worker held, and the one backoff
every retry waits."""
