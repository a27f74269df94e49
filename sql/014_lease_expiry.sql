-- Leases that expire (ledger/coordination/lease.py). The holder of a name's current term pushes
-- expires_at to the database's now() + LEASE_SECONDS every LEASE_RETRY_SECONDS; a standby takes
-- the lease (a new term) only once expires_at has passed. Rows written before this column existed
-- were held by a session advisory lock and have no expiry: a lease without one is free.
ALTER TABLE listener_terms ADD COLUMN expires_at timestamptz;
