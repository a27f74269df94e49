"""Coordination between processes: the listener-to-worker message contract, the shared request
budget, the leadership lease and the recovery of messages a dead worker held."""
