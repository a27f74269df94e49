-- The event log (ledger/store/events.py): what an operator's other services learn from the ledger,
-- written in the same transaction as the change it describes (an outbox).

-- `id` is the write order, which is not the commit order: two transactions can commit in the
-- opposite order of their ids, so a reader paging by `id` could pass over one still uncommitted.
-- `seq` is the public event id, given to committed events by the relay under an exclusive lock,
-- so it grows in commit order and a cursor on it never skips an event (ledger/store/events.py).
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    seq         bigint UNIQUE,              -- NULL until the relay sequences it
    type        text NOT NULL,
    account     text,                       -- NULL: an event of the service, not of one account
    block_num   bigint,
    block_time  timestamptz,                -- the block's timestamp: the chain's time of the event
    payload     jsonb NOT NULL,
    once_key    text UNIQUE,                -- events that may happen only once (a lock's end, a lot's maturity)
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_unsequenced ON events (id) WHERE seq IS NULL;
CREATE INDEX events_account ON events (account, seq) WHERE seq IS NOT NULL;

-- A timestamp as the API writes it (orjson, UTC, "Z"): microseconds only when there are any.
CREATE FUNCTION ledger_json_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN extract(microseconds FROM t)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(t AT TIME ZONE 'UTC', '.US') END
        || 'Z'
$$;

-- operation.* events: one per change of a record's status or block, for each pool account the
-- record belongs to (its owner, a delegation's receiver). A trigger, so that every writer of
-- these rows (persist, confirm, revert, the lifecycle job, repairs) emits them in its own
-- transaction and none can forget to. A record that moves to another block while not orphaned
-- (its transaction re-packed after a fork, written before the old block's revert) left the old
-- block: that is an operation.orphaned of the old one, then the event of the new one, as a revert
-- that ran first would have produced.
CREATE FUNCTION ledger_stake_event(r stake_records, kind text, previous text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO events (type, account, block_num, block_time, payload)
    SELECT 'operation.' || kind, a.address, r.block_num, r.block_time,
           jsonb_build_object(
               'list', 'stake', 'previous_status', previous, 'block_id', r.block_id,
               'record', jsonb_build_object(
                   'id', r.id, 'tx_id', r.tx_id, 'op_index', r.op_index, 'block_num', r.block_num,
                   'block_time', ledger_json_time(r.block_time), 'owner_address', r.owner_address,
                   'contract_type', r.contract_type, 'amount', r.amount, 'operation_type', r.operation_type,
                   'resource', r.resource, 'status', kind))
    FROM pool_accounts a WHERE a.address = r.owner_address
$$;

CREATE FUNCTION ledger_delegate_event(r delegate_records, kind text, previous text) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO events (type, account, block_num, block_time, payload)
    SELECT 'operation.' || kind, a.address, r.block_num, r.block_time,
           jsonb_build_object(
               'list', 'delegate', 'previous_status', previous, 'block_id', r.block_id,
               'record', jsonb_build_object(
                   'id', r.id, 'tx_id', r.tx_id, 'op_index', r.op_index, 'block_num', r.block_num,
                   'block_time', ledger_json_time(r.block_time), 'owner_address', r.owner_address,
                   'contract_type', r.contract_type, 'amount', r.amount, 'operation_type', r.operation_type,
                   'resource', r.resource, 'status', kind, 'receiver_address', r.receiver_address,
                   'lock', r.lock, 'lock_period', r.lock_period,
                   'lock_expire_time', ledger_json_time(r.lock_expire_time)))
    FROM pool_accounts a WHERE a.address IN (r.owner_address, r.receiver_address)
$$;

CREATE FUNCTION ledger_stake_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.block_id IS DISTINCT FROM NEW.block_id AND OLD.status <> 'orphaned' THEN
        PERFORM ledger_stake_event(OLD, 'orphaned', NULL);
    END IF;
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status OR OLD.block_id IS DISTINCT FROM NEW.block_id THEN
        PERFORM ledger_stake_event(
            NEW, NEW.status, CASE WHEN TG_OP = 'UPDATE' AND OLD.block_id = NEW.block_id THEN OLD.status END);
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION ledger_delegate_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.block_id IS DISTINCT FROM NEW.block_id AND OLD.status <> 'orphaned' THEN
        PERFORM ledger_delegate_event(OLD, 'orphaned', NULL);
    END IF;
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status OR OLD.block_id IS DISTINCT FROM NEW.block_id THEN
        PERFORM ledger_delegate_event(
            NEW, NEW.status, CASE WHEN TG_OP = 'UPDATE' AND OLD.block_id = NEW.block_id THEN OLD.status END);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER stake_records_event_insert AFTER INSERT ON stake_records
    FOR EACH ROW EXECUTE FUNCTION ledger_stake_record_event();
CREATE TRIGGER stake_records_event_update AFTER UPDATE OF status, block_id ON stake_records
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.block_id IS DISTINCT FROM NEW.block_id)
    EXECUTE FUNCTION ledger_stake_record_event();
CREATE TRIGGER delegate_records_event_insert AFTER INSERT ON delegate_records
    FOR EACH ROW EXECUTE FUNCTION ledger_delegate_record_event();
CREATE TRIGGER delegate_records_event_update AFTER UPDATE OF status, block_id ON delegate_records
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.block_id IS DISTINCT FROM NEW.block_id)
    EXECUTE FUNCTION ledger_delegate_record_event();

-- drift.detected: a state reconciliation run opened a drift row (a difference it had not seen
-- open before), in the run's transaction; the figures as GET /api/drift shows them.
CREATE FUNCTION ledger_drift_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, account, block_num, payload)
    VALUES ('drift.detected', NEW.account, NEW.since_block, jsonb_build_object(
        'drift_id', NEW.id, 'what', NEW.what, 'chain_amount', NEW.chain_amount,
        'ledger_amount', NEW.ledger_amount, 'difference', NEW.difference,
        'since_block', NEW.since_block));
    RETURN NULL;
END $$;
CREATE TRIGGER drift_event AFTER INSERT ON drift FOR EACH ROW EXECUTE FUNCTION ledger_drift_event();

-- Webhook subscriptions (ledger/store/webhooks.py). `after_seq` is the relay's place: every event
-- up to it that matches has a delivery. Empty `types` / `accounts`: every type / account.
CREATE TABLE webhook_subscriptions (
    id              bigserial PRIMARY KEY,
    url             text NOT NULL,
    types           text[] NOT NULL DEFAULT '{}',
    accounts        text[] NOT NULL DEFAULT '{}',
    secret          text NOT NULL,
    previous_secret text,                   -- still signed with during a rotation, until previous_until
    previous_until  timestamptz,
    enabled         boolean NOT NULL DEFAULT true,
    after_seq       bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per (subscription, event) to deliver. `due_at`: when the delivery's message should have
-- run by (its retry's latest time); a pending row past it lost its message and is sent again.
CREATE TABLE webhook_deliveries (
    subscription_id bigint NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_seq       bigint NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    last_code       integer,
    last_error      text,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    due_at          timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    PRIMARY KEY (subscription_id, event_seq)
);
CREATE INDEX webhook_deliveries_open ON webhook_deliveries (due_at) WHERE status = 'pending';
