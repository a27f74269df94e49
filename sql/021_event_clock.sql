-- Chain time for the events of time passing (ledger/store/clock.py): the timestamp of each block
-- the listener processed, kept two days, and how far the clock has looked.
CREATE TABLE block_times (
    block_num bigint PRIMARY KEY,
    time_ms   bigint NOT NULL
);

-- One row: the last block whose time the clock has compared lock ends and lot expiries with.
CREATE TABLE event_clock (
    id         smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    block_num  bigint NOT NULL,
    time_ms    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The clock's look-ups: locks and lots ending in a window of chain time.
CREATE INDEX delegate_records_lock_end ON delegate_records (lock_expire_time) WHERE lock;
CREATE INDEX unfreeze_records_available ON unfreeze_records (available_time);
