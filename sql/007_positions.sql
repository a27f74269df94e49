-- Positions as java-tron keeps them (ledger/positions.py).

-- java-tron's "now" for a block's transactions is the PARENT block's header timestamp
-- (Manager.processBlock applies transactions before updateDynamicProperties): lock ends, unfreeze
-- expire times and withdraw maturity are computed from it. NULL where it is not known.
ALTER TABLE stake_records ADD COLUMN parent_time_ms bigint;
ALTER TABLE delegate_records ADD COLUMN parent_time_ms bigint;

-- The time of the checkpoint's block: the age of the data a summary describes.
ALTER TABLE listener_checkpoint ADD COLUMN block_time_ms bigint;

-- An account's state as read from the chain at a block (getaccount, getdelegatedresourcev2 per
-- receiver); only records after that block are applied on top of it.
CREATE TABLE position_openings (
    address   text PRIMARY KEY,
    block_num bigint NOT NULL,
    state     json NOT NULL,      -- ledger.positions.Position.to_json
    source    text NOT NULL DEFAULT 'chain',
    taken_at  timestamptz NOT NULL DEFAULT now()
);

-- An account's state folded through block_num, at or below the solidified head (so no fork ever
-- changes it). `json`, not `jsonb`: it is read whole on every summary and json is returned as
-- stored, with no conversion.
CREATE TABLE positions (
    address    text PRIMARY KEY,
    block_num  bigint NOT NULL,
    state      json NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
