-- The platform's own id of a pool account (issue 11): the frontend this ledger replaces names its
-- accounts by it, so every route that takes an account accepts it (web/params.py).
-- Text, because the platform's ids are opaque to this service; printable ASCII without spaces, at
-- most 64 characters, so that it can sit in a query string, a CSV cell and a cache key unquoted.
-- Optional (accounts added from POOL_ACCOUNTS have none) and unique when set.
ALTER TABLE pool_accounts
    ADD COLUMN external_id text UNIQUE CHECK (external_id ~ '^[!-~]{1,64}$');
