-- The record tables' event triggers (sql/020_events.sql), cheaper: the INSERTs in PL/pgSQL itself,
-- which keeps each statement's plan for the session (the SQL-language helpers they called were
-- planned again on every row), and the record's times as epoch milliseconds, which the reader
-- turns into the API's timestamps (ledger/store/events.py), instead of to_char on every write.
-- Together they were most of what events cost ingest (bench/events.py).
CREATE OR REPLACE FUNCTION ledger_stake_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved boolean := TG_OP = 'UPDATE' AND OLD.block_id IS DISTINCT FROM NEW.block_id;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pool_accounts WHERE address = NEW.owner_address) THEN
        RETURN NULL;
    END IF;
    IF moved AND OLD.status <> 'orphaned' THEN
        INSERT INTO events (type, account, block_num, block_time, payload)
        VALUES ('operation.orphaned', OLD.owner_address, OLD.block_num, OLD.block_time, jsonb_build_object(
            'list', 'stake', 'previous_status', NULL, 'block_id', OLD.block_id,
            'record', jsonb_build_object(
                'id', OLD.id, 'tx_id', OLD.tx_id, 'op_index', OLD.op_index, 'block_num', OLD.block_num,
                'block_time', (extract(epoch FROM OLD.block_time) * 1000)::bigint, 'owner_address', OLD.owner_address,
                'contract_type', OLD.contract_type, 'amount', OLD.amount, 'operation_type', OLD.operation_type,
                'resource', OLD.resource, 'status', 'orphaned')));
    END IF;
    IF TG_OP = 'INSERT' OR moved OR OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO events (type, account, block_num, block_time, payload)
        VALUES ('operation.' || NEW.status, NEW.owner_address, NEW.block_num, NEW.block_time, jsonb_build_object(
            'list', 'stake', 'previous_status', CASE WHEN TG_OP = 'UPDATE' AND NOT moved THEN OLD.status END,
            'block_id', NEW.block_id,
            'record', jsonb_build_object(
                'id', NEW.id, 'tx_id', NEW.tx_id, 'op_index', NEW.op_index, 'block_num', NEW.block_num,
                'block_time', (extract(epoch FROM NEW.block_time) * 1000)::bigint, 'owner_address', NEW.owner_address,
                'contract_type', NEW.contract_type, 'amount', NEW.amount, 'operation_type', NEW.operation_type,
                'resource', NEW.resource, 'status', NEW.status)));
    END IF;
    RETURN NULL;
END $$;

-- A delegation's event goes to each pool account among its owner and receiver.
CREATE OR REPLACE FUNCTION ledger_delegate_record_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    moved boolean := TG_OP = 'UPDATE' AND OLD.block_id IS DISTINCT FROM NEW.block_id;
    account text;
BEGIN
    FOR account IN SELECT address FROM pool_accounts WHERE address IN (NEW.owner_address, NEW.receiver_address) LOOP
        IF moved AND OLD.status <> 'orphaned' THEN
            INSERT INTO events (type, account, block_num, block_time, payload)
            VALUES ('operation.orphaned', account, OLD.block_num, OLD.block_time, jsonb_build_object(
                'list', 'delegate', 'previous_status', NULL, 'block_id', OLD.block_id,
                'record', jsonb_build_object(
                    'id', OLD.id, 'tx_id', OLD.tx_id, 'op_index', OLD.op_index, 'block_num', OLD.block_num,
                    'block_time', (extract(epoch FROM OLD.block_time) * 1000)::bigint, 'owner_address', OLD.owner_address,
                    'contract_type', OLD.contract_type, 'amount', OLD.amount, 'operation_type', OLD.operation_type,
                    'resource', OLD.resource, 'status', 'orphaned', 'receiver_address', OLD.receiver_address,
                    'lock', OLD.lock, 'lock_period', OLD.lock_period,
                    'lock_expire_time', (extract(epoch FROM OLD.lock_expire_time) * 1000)::bigint)));
        END IF;
        IF TG_OP = 'INSERT' OR moved OR OLD.status IS DISTINCT FROM NEW.status THEN
            INSERT INTO events (type, account, block_num, block_time, payload)
            VALUES ('operation.' || NEW.status, account, NEW.block_num, NEW.block_time, jsonb_build_object(
                'list', 'delegate', 'previous_status', CASE WHEN TG_OP = 'UPDATE' AND NOT moved THEN OLD.status END,
                'block_id', NEW.block_id,
                'record', jsonb_build_object(
                    'id', NEW.id, 'tx_id', NEW.tx_id, 'op_index', NEW.op_index, 'block_num', NEW.block_num,
                    'block_time', (extract(epoch FROM NEW.block_time) * 1000)::bigint, 'owner_address', NEW.owner_address,
                    'contract_type', NEW.contract_type, 'amount', NEW.amount, 'operation_type', NEW.operation_type,
                    'resource', NEW.resource, 'status', NEW.status, 'receiver_address', NEW.receiver_address,
                    'lock', NEW.lock, 'lock_period', NEW.lock_period,
                    'lock_expire_time', (extract(epoch FROM NEW.lock_expire_time) * 1000)::bigint)));
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

DROP FUNCTION ledger_stake_event(stake_records, text, text);
DROP FUNCTION ledger_delegate_event(delegate_records, text, text);
DROP FUNCTION ledger_json_time(timestamptz);
