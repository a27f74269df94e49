-- Forks. The listener keeps the ids of the recent, not yet solidified blocks it processed, so on a
-- parentHash mismatch it can walk back to the common ancestor. Blocks that left the chain are
-- recorded in orphaned_blocks before anything of the new branch is enqueued: a record from such a
-- block is stored 'orphaned' (and never confirmed) whatever order the workers see messages in.

CREATE TABLE recent_blocks (
    block_num   bigint PRIMARY KEY,
    block_id    text NOT NULL,
    parent_hash text NOT NULL
);

CREATE TABLE orphaned_blocks (
    block_id    text PRIMARY KEY,
    block_num   bigint NOT NULL,
    orphaned_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX stake_records_block_id ON stake_records (block_id) WHERE status = 'pending';
CREATE INDEX delegate_records_block_id ON delegate_records (block_id) WHERE status = 'pending';
