-- Reconciliation on a schedule (scheduler/, workers/reconcile.py, workers/lifecycle.py).

-- One row per job per time window: the scheduler inserts it before enqueuing anything, and only
-- the insert that wins enqueues. A lease alone is no guarantee (a paused holder may not know it
-- lost it), this unique key is. Workers count their messages done on the same row, which
-- is also what the status page shows as the scheduler's last runs.
CREATE TABLE job_runs (
    id           bigserial PRIMARY KEY,
    job          text NOT NULL,
    window_start timestamptz NOT NULL,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    holder       text,                      -- host:pid of the scheduler that enqueued it
    term         bigint,
    messages     integer NOT NULL DEFAULT 0,
    done         integer NOT NULL DEFAULT 0,
    finished_at  timestamptz,               -- when every message was done
    result       jsonb NOT NULL DEFAULT '{}',
    UNIQUE (job, window_start)
);
CREATE INDEX job_runs_recent ON job_runs (job, window_start DESC);

-- Gap reconciliation: per pool account, the last point TronGrid's account index was read up to
-- (block timestamp, ms). The next run asks from there (min_timestamp), so a run is resumable.
CREATE TABLE reconcile_cursors (
    account      text PRIMARY KEY,
    timestamp_ms bigint NOT NULL,
    block_num    bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Operations the listener never delivered and reconciliation found: the "recovered by
-- reconciliation" count, and which ones.
CREATE TABLE recovered_operations (
    tx_id      text NOT NULL,
    op_index   smallint NOT NULL,
    account    text NOT NULL,
    block_num  bigint NOT NULL,
    kind       text NOT NULL,
    run_id     bigint,
    found_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tx_id, op_index)
);

-- State reconciliation: where the chain's account state and the ledger disagree. One open row per
-- (account, what); it is closed (resolved_*) by the first state run that finds them equal again.
CREATE TABLE drift (
    id             bigserial PRIMARY KEY,
    account        text NOT NULL,
    what           text NOT NULL,            -- e.g. 'frozen:ENERGY', 'delegated_out:BANDWIDTH'
    chain_amount   numeric NOT NULL,
    ledger_amount  numeric NOT NULL,
    difference     numeric NOT NULL,         -- chain - ledger, sun
    since_block    bigint NOT NULL,          -- the block of the first state run that saw it
    checked_block  bigint NOT NULL,          -- the block of the last state run that still saw it
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    resolved_block bigint,
    resolved_at    timestamptz
);
CREATE UNIQUE INDEX drift_open ON drift (account, what) WHERE resolved_block IS NULL;
CREATE INDEX drift_recent ON drift (account, last_seen DESC);
