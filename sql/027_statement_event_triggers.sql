-- The record tables' operation.* events (sql/020_events.sql, sql/025_event_triggers.sql) written
-- once per statement from its transition tables: one INSERT ... SELECT for all the rows a
-- statement wrote (a group's multi-row upsert, a confirmation, a revert) instead of a PL/pgSQL call
-- and an INSERT per row. The events are the same: per changed record and pool account, in the
-- order of the records' ids, a moved record's operation.orphaned (of the block it left) before the
-- event of its new block. Transition tables cannot go with a column list (UPDATE OF ...), so the
-- update triggers fire on every UPDATE and keep the rows whose status or block changed.
-- Written to apply again cleanly (IF EXISTS, OR REPLACE): a database may hold it under another file name.
DROP TRIGGER IF EXISTS stake_records_event_insert ON stake_records;
DROP TRIGGER IF EXISTS stake_records_event_update ON stake_records;
DROP TRIGGER IF EXISTS delegate_records_event_insert ON delegate_records;
DROP TRIGGER IF EXISTS delegate_records_event_update ON delegate_records;
DROP FUNCTION IF EXISTS ledger_stake_record_event();
DROP FUNCTION IF EXISTS ledger_delegate_record_event();

CREATE OR REPLACE FUNCTION ledger_stake_records_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, account, block_num, block_time, payload)
    SELECT 'operation.' || n.status, n.owner_address, n.block_num, n.block_time, jsonb_build_object(
        'list', 'stake', 'previous_status', NULL, 'block_id', n.block_id,
        'record', jsonb_build_object(
            'id', n.id, 'tx_id', n.tx_id, 'op_index', n.op_index, 'block_num', n.block_num,
            'block_time', (extract(epoch FROM n.block_time) * 1000)::bigint, 'owner_address', n.owner_address,
            'contract_type', n.contract_type, 'amount', n.amount, 'operation_type', n.operation_type,
            'resource', n.resource, 'status', n.status))
    FROM new_rows n JOIN pool_accounts a ON a.address = n.owner_address
    ORDER BY n.id;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ledger_stake_records_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, account, block_num, block_time, payload)
    SELECT e.type, e.account, e.block_num, e.block_time, e.payload
    FROM (
        SELECT o.id, 0 AS k, 'operation.orphaned' AS type, o.owner_address AS account, o.block_num, o.block_time,
               jsonb_build_object(
                   'list', 'stake', 'previous_status', NULL, 'block_id', o.block_id,
                   'record', jsonb_build_object(
                       'id', o.id, 'tx_id', o.tx_id, 'op_index', o.op_index, 'block_num', o.block_num,
                       'block_time', (extract(epoch FROM o.block_time) * 1000)::bigint,
                       'owner_address', o.owner_address, 'contract_type', o.contract_type, 'amount', o.amount,
                       'operation_type', o.operation_type, 'resource', o.resource, 'status', 'orphaned')) AS payload
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE o.block_id <> n.block_id AND o.status <> 'orphaned'
          AND EXISTS (SELECT 1 FROM pool_accounts a WHERE a.address = n.owner_address)
        UNION ALL
        SELECT n.id, 1, 'operation.' || n.status, n.owner_address, n.block_num, n.block_time,
               jsonb_build_object(
                   'list', 'stake', 'previous_status', CASE WHEN o.block_id = n.block_id THEN o.status END,
                   'block_id', n.block_id,
                   'record', jsonb_build_object(
                       'id', n.id, 'tx_id', n.tx_id, 'op_index', n.op_index, 'block_num', n.block_num,
                       'block_time', (extract(epoch FROM n.block_time) * 1000)::bigint,
                       'owner_address', n.owner_address, 'contract_type', n.contract_type, 'amount', n.amount,
                       'operation_type', n.operation_type, 'resource', n.resource, 'status', n.status))
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        WHERE (o.block_id <> n.block_id OR o.status <> n.status)
          AND EXISTS (SELECT 1 FROM pool_accounts a WHERE a.address = n.owner_address)
    ) e
    ORDER BY e.id, e.k;
    RETURN NULL;
END $$;

-- A delegation's events go to each pool account among its owner and receiver.
CREATE OR REPLACE FUNCTION ledger_delegate_records_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, account, block_num, block_time, payload)
    SELECT 'operation.' || n.status, a.address, n.block_num, n.block_time, jsonb_build_object(
        'list', 'delegate', 'previous_status', NULL, 'block_id', n.block_id,
        'record', jsonb_build_object(
            'id', n.id, 'tx_id', n.tx_id, 'op_index', n.op_index, 'block_num', n.block_num,
            'block_time', (extract(epoch FROM n.block_time) * 1000)::bigint, 'owner_address', n.owner_address,
            'contract_type', n.contract_type, 'amount', n.amount, 'operation_type', n.operation_type,
            'resource', n.resource, 'status', n.status, 'receiver_address', n.receiver_address,
            'lock', n.lock, 'lock_period', n.lock_period,
            'lock_expire_time', (extract(epoch FROM n.lock_expire_time) * 1000)::bigint))
    FROM new_rows n JOIN pool_accounts a ON a.address IN (n.owner_address, n.receiver_address)
    ORDER BY n.id, a.address;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ledger_delegate_records_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO events (type, account, block_num, block_time, payload)
    SELECT e.type, e.account, e.block_num, e.block_time, e.payload
    FROM (
        SELECT o.id, a.address AS account, 0 AS k, 'operation.orphaned' AS type, o.block_num, o.block_time,
               jsonb_build_object(
                   'list', 'delegate', 'previous_status', NULL, 'block_id', o.block_id,
                   'record', jsonb_build_object(
                       'id', o.id, 'tx_id', o.tx_id, 'op_index', o.op_index, 'block_num', o.block_num,
                       'block_time', (extract(epoch FROM o.block_time) * 1000)::bigint,
                       'owner_address', o.owner_address, 'contract_type', o.contract_type, 'amount', o.amount,
                       'operation_type', o.operation_type, 'resource', o.resource, 'status', 'orphaned',
                       'receiver_address', o.receiver_address, 'lock', o.lock, 'lock_period', o.lock_period,
                       'lock_expire_time', (extract(epoch FROM o.lock_expire_time) * 1000)::bigint)) AS payload
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        JOIN pool_accounts a ON a.address IN (n.owner_address, n.receiver_address)
        WHERE o.block_id <> n.block_id AND o.status <> 'orphaned'
        UNION ALL
        SELECT n.id, a.address, 1, 'operation.' || n.status, n.block_num, n.block_time,
               jsonb_build_object(
                   'list', 'delegate', 'previous_status', CASE WHEN o.block_id = n.block_id THEN o.status END,
                   'block_id', n.block_id,
                   'record', jsonb_build_object(
                       'id', n.id, 'tx_id', n.tx_id, 'op_index', n.op_index, 'block_num', n.block_num,
                       'block_time', (extract(epoch FROM n.block_time) * 1000)::bigint,
                       'owner_address', n.owner_address, 'contract_type', n.contract_type, 'amount', n.amount,
                       'operation_type', n.operation_type, 'resource', n.resource, 'status', n.status,
                       'receiver_address', n.receiver_address, 'lock', n.lock, 'lock_period', n.lock_period,
                       'lock_expire_time', (extract(epoch FROM n.lock_expire_time) * 1000)::bigint))
        FROM old_rows o JOIN new_rows n ON n.id = o.id
        JOIN pool_accounts a ON a.address IN (n.owner_address, n.receiver_address)
        WHERE o.block_id <> n.block_id OR o.status <> n.status
    ) e
    ORDER BY e.id, e.account, e.k;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS stake_records_events_insert ON stake_records;
CREATE TRIGGER stake_records_events_insert AFTER INSERT ON stake_records
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_stake_records_inserted();
DROP TRIGGER IF EXISTS stake_records_events_update ON stake_records;
CREATE TRIGGER stake_records_events_update AFTER UPDATE ON stake_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_stake_records_updated();
DROP TRIGGER IF EXISTS delegate_records_events_insert ON delegate_records;
CREATE TRIGGER delegate_records_events_insert AFTER INSERT ON delegate_records
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_delegate_records_inserted();
DROP TRIGGER IF EXISTS delegate_records_events_update ON delegate_records;
CREATE TRIGGER delegate_records_events_update AFTER UPDATE ON delegate_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_delegate_records_updated();
