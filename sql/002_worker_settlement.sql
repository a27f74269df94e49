-- Worker support (added with the worker; 001 is left as shipped).

-- Settling an unfreeze lot looks for the owner's first withdraw or cancel after the lot. Those
-- rows are a small share of stake_records, so a partial index keeps that probe short for owners
-- with a long freeze/unfreeze history.
CREATE INDEX stake_records_settlements
    ON stake_records (owner_address, block_num, tx_index, op_index)
    WHERE operation_type IN ('withdraw_expire_unfreeze', 'cancel_all_unfreeze');

-- The broker's own id of the dead-lettered copy (its member in `dramatiq:<queue>.XQ`), so a
-- requeue from the table can also drop the broker's copy instead of scanning the XQ hash.
ALTER TABLE dead_letters ADD COLUMN redis_message_id text;
