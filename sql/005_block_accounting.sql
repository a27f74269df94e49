-- End-to-end accounting (ledger/accounting.py, docs/RELIABILITY.md). In the transaction that
-- advances the checkpoint, the listener records every operation its blocks must produce, with
-- the message it enqueued. A row leaves this table once the operation is in stake_records or
-- delegate_records with that very block id; whatever stays past the grace period is enqueued
-- again from `payload`. So the table holds the operations in flight, not the history.
CREATE TABLE expected_operations (
    tx_id       text NOT NULL,
    op_index    smallint NOT NULL,
    block_id    text NOT NULL,
    block_num   bigint NOT NULL,
    payload     jsonb NOT NULL,              -- Operation.to_message(), as enqueued
    recorded_at timestamptz NOT NULL DEFAULT now(),
    repairs     integer NOT NULL DEFAULT 0,  -- times enqueued again
    due_at      timestamptz,                 -- next repair; NULL: recorded_at + the grace period
    PRIMARY KEY (tx_id, op_index, block_id)
);
CREATE INDEX expected_operations_block ON expected_operations (block_num);

-- The persisted watermark beside the checkpoint: every block at or below it has all its
-- operations in PostgreSQL. NULL until the first repair pass after this migration.
ALTER TABLE listener_checkpoint ADD COLUMN persisted_block bigint;
ALTER TABLE listener_checkpoint ADD COLUMN persisted_at timestamptz;

-- A fork now orphans failed rows too (workers/persist.py): index them by block like pending ones.
DROP INDEX stake_records_block_id;
DROP INDEX delegate_records_block_id;
CREATE INDEX stake_records_block_id ON stake_records (block_id) WHERE status IN ('pending', 'failed');
CREATE INDEX delegate_records_block_id ON delegate_records (block_id) WHERE status IN ('pending', 'failed');
