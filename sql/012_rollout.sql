-- Gray release of the records API (ledger/rollout.py): which share of accounts the legacy
-- TronGrid path answers, and which share of natively answered requests is compared with it.
-- One row, read by every web process every ROLLOUT_REFRESH_SECONDS; kept in PostgreSQL so a
-- rollback (`ledger rollout set 0`) survives restarts and reaches every host.
CREATE TABLE rollout (
    id             smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    legacy_percent smallint NOT NULL DEFAULT 0 CHECK (legacy_percent BETWEEN 0 AND 100),
    shadow_percent smallint NOT NULL DEFAULT 0 CHECK (shadow_percent BETWEEN 0 AND 100),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text
);
INSERT INTO rollout (id) VALUES (1);
