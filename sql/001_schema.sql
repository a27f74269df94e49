-- The ledger's tables. Amounts are exact sun in BIGINT (int64, as on chain); sums come back as
-- NUMERIC, so totals past 2^53 stay exact. Every record is keyed by its chain identity
-- (tx_id, op_index), which makes every write an idempotent upsert.

CREATE TABLE pool_accounts (
    id         bigserial PRIMARY KEY,
    address    text NOT NULL UNIQUE CHECK (address ~ '^T[1-9A-HJ-NP-Za-km-z]{33}$'),
    label      text,
    added_at   timestamptz NOT NULL DEFAULT now()
);

-- freeze, unfreeze, withdraw_expire_unfreeze, cancel_all_unfreeze
CREATE TABLE stake_records (
    id             bigserial PRIMARY KEY,
    tx_id          text NOT NULL,
    op_index       smallint NOT NULL,
    block_num      bigint NOT NULL,
    block_id       text NOT NULL,
    tx_index       integer NOT NULL,
    block_time     timestamptz NOT NULL,
    owner_address  text NOT NULL,
    operation_type text NOT NULL CHECK (operation_type IN
                     ('freeze', 'unfreeze', 'withdraw_expire_unfreeze', 'cancel_all_unfreeze')),
    contract_type  text NOT NULL,
    resource       text CHECK (resource IN ('BANDWIDTH', 'ENERGY', 'TRON_POWER')),
    amount         bigint NOT NULL CHECK (amount >= 0),
    status         text NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed', 'orphaned')),
    contract_ret   text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tx_id, op_index)
);
-- Serves the API's keyset pages (newest first) and the per-account summary.
CREATE INDEX stake_records_owner_page
    ON stake_records (owner_address, block_num DESC, tx_index DESC, op_index DESC, id DESC);
-- Serves confirmation: only the few rows still pending are indexed.
CREATE INDEX stake_records_pending ON stake_records (block_num) WHERE status = 'pending';

-- delegate, undelegate. Locked and unlocked delegations to one receiver are separate positions.
CREATE TABLE delegate_records (
    id               bigserial PRIMARY KEY,
    tx_id            text NOT NULL,
    op_index         smallint NOT NULL,
    block_num        bigint NOT NULL,
    block_id         text NOT NULL,
    tx_index         integer NOT NULL,
    block_time       timestamptz NOT NULL,
    owner_address    text NOT NULL,
    receiver_address text NOT NULL,
    operation_type   text NOT NULL CHECK (operation_type IN ('delegate', 'undelegate')),
    contract_type    text NOT NULL,
    resource         text NOT NULL CHECK (resource IN ('BANDWIDTH', 'ENERGY', 'TRON_POWER')),
    amount           bigint NOT NULL CHECK (amount >= 0),
    lock             boolean NOT NULL DEFAULT false,
    lock_period      bigint NOT NULL DEFAULT 0,      -- in 3-second blocks
    lock_expire_time timestamptz,                    -- block_time + lock_period * 3 s
    status           text NOT NULL CHECK (status IN ('pending', 'confirmed', 'failed', 'orphaned')),
    contract_ret     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tx_id, op_index)
);
CREATE INDEX delegate_records_owner_page
    ON delegate_records (owner_address, block_num DESC, tx_index DESC, op_index DESC, id DESC);
CREATE INDEX delegate_records_receiver_page
    ON delegate_records (receiver_address, block_num DESC, tx_index DESC, op_index DESC, id DESC);
CREATE INDEX delegate_records_pending ON delegate_records (block_num) WHERE status = 'pending';

-- One row per UnfreezeBalanceV2 lot. 'withdrawable' is derived when read (pending and
-- available_time passed); withdrawn/cancelled are set by the withdraw or cancel that settled it.
CREATE TABLE unfreeze_records (
    id             bigserial PRIMARY KEY,
    tx_id          text NOT NULL,
    op_index       smallint NOT NULL,
    block_num      bigint NOT NULL,
    tx_index       integer NOT NULL,
    block_time     timestamptz NOT NULL,
    owner_address  text NOT NULL,
    resource       text NOT NULL CHECK (resource IN ('BANDWIDTH', 'ENERGY', 'TRON_POWER')),
    amount         bigint NOT NULL CHECK (amount >= 0),
    available_time timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN
                     ('pending', 'withdrawable', 'withdrawn', 'cancelled', 'orphaned')),
    confirmed      boolean NOT NULL DEFAULT false,
    settled_tx_id  text,
    settled_time   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tx_id, op_index)
);
CREATE INDEX unfreeze_records_owner_page
    ON unfreeze_records (owner_address, block_num DESC, tx_index DESC, op_index DESC, id DESC);
CREATE INDEX unfreeze_records_open
    ON unfreeze_records (owner_address, available_time) WHERE status IN ('pending', 'withdrawable');

-- The listener's position. `term` fences the update: only the holder of the current term may
-- advance it (a later issue adds active/standby listeners).
CREATE TABLE listener_checkpoint (
    name       text PRIMARY KEY,
    block_num  bigint NOT NULL,
    block_id   text,
    term       bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What the chain looked like at the last poll (for confirmation and health).
CREATE TABLE chain_state (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    head_block  bigint NOT NULL DEFAULT 0,
    solid_block bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO chain_state (id) VALUES (1);

-- Malformed chain data the listener skipped, with where it was.
CREATE TABLE ingest_errors (
    id         bigserial PRIMARY KEY,
    block_num  bigint NOT NULL,
    tx_id      text,
    message    text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (block_num, tx_id, message)
);

-- Final failures of worker messages, written by the dead-letter middleware (the broker's own
-- dead-letter copy holds the previous attempt's traceback, not the final one).
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    message_id  text NOT NULL,
    queue_name  text NOT NULL,
    actor_name  text NOT NULL,
    args        jsonb NOT NULL,
    error_type  text NOT NULL,
    error       text NOT NULL,
    retries     integer NOT NULL DEFAULT 0,
    failed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_failed_at ON dead_letters (failed_at DESC);
