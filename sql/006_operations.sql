-- Operating the ledger (docs/OPERATIONS.md): complete dead letters, listener heartbeats, freshness.

-- Every message that ends dead is recorded whatever the reason (reason: retries_exhausted,
-- permanent_error, unknown_actor, expired), with what it takes to send it again and to see why.
-- One row per message id: the worker may emit the same failure twice (its nack is retried after a
-- broker connection error), and a requeued message that dies again replaces its row.
ALTER TABLE dead_letters
    ADD COLUMN kwargs    jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN reason    text NOT NULL DEFAULT 'retries_exhausted',
    ADD COLUMN traceback text,
    ADD COLUMN attempts  integer NOT NULL DEFAULT 0;
DELETE FROM dead_letters a USING dead_letters b WHERE a.message_id = b.message_id AND a.id < b.id;
CREATE UNIQUE INDEX dead_letters_message_id ON dead_letters (message_id);
CREATE INDEX dead_letters_actor ON dead_letters (actor_name, id DESC);

-- One row per listener process (holder = host:pid), written every LISTENER_HEARTBEAT_SECONDS by
-- active and standby listeners alike; the active one also says what it saw of the chain.
CREATE TABLE listener_heartbeats (
    holder           text PRIMARY KEY,
    name             text NOT NULL,            -- checkpoint name ('main')
    role             text NOT NULL CHECK (role IN ('active', 'standby')),
    term             bigint,
    started_at       timestamptz NOT NULL,
    beat_at          timestamptz NOT NULL,
    head_block       bigint,                   -- the node's head when last polled
    head_time        timestamptz,              -- that block's timestamp (the chain's clock)
    processed_block  bigint,                   -- the checkpoint: last block enqueued
    processed_time   timestamptz               -- its timestamp
);

-- Freshness over time for the status page: one sample per active heartbeat, kept a day.
CREATE TABLE freshness_samples (
    sampled_at      timestamptz NOT NULL DEFAULT now(),
    head_block      bigint NOT NULL,
    processed_block bigint NOT NULL,
    latency_ms      bigint NOT NULL             -- head_time - processed_time
);
CREATE INDEX freshness_samples_at ON freshness_samples (sampled_at);

-- The monitor's block -> stored lag reads the records written in the last hour. BRIN: rows are
-- written in created_at order, so a block-range index a few pages large finds them without a
-- scan of the whole table, for almost nothing per insert (unlike a B-tree on every record).
CREATE INDEX stake_records_created_brin ON stake_records USING brin (created_at);
CREATE INDEX delegate_records_created_brin ON delegate_records USING brin (created_at);
