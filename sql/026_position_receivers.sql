-- What the summary renders from an account's folded state, written with it by the fold
-- (ledger/store/positions.py), so a read renders only the pending tail on top: the per-receiver
-- delegations in rows a keyset page reads, and the state without them plus the totals over all
-- receivers in `positions.figures`. Chain-time figures are decided at read time from these rows
-- (a lock is shown locked while its end is >= the chain time: `position_receivers_lock_end`).

-- Python's order of the receivers (code points): COLLATE "C", so the key order and a page agree.
CREATE TABLE position_receivers (
    address   text NOT NULL REFERENCES positions (address) ON DELETE CASCADE,
    receiver  text COLLATE "C" NOT NULL,
    resource  text COLLATE "C" NOT NULL,
    unlocked  bigint NOT NULL,
    locked    bigint NOT NULL,
    expire_ms bigint NOT NULL,      -- lock end of the locked amount; 0 when nothing is locked
    PRIMARY KEY (address, receiver, resource)
);
CREATE INDEX position_receivers_lock_end ON position_receivers (address, expire_ms)
    INCLUDE (resource, locked) WHERE locked > 0;

-- ledger.store.positions: the folded state without its receivers, with the totals over them. NULL:
-- not written by a fold that stores figures; the read then renders the whole state.
ALTER TABLE positions ADD COLUMN figures json;

-- Folded states without figures are rebuilt from the openings by the next fold.
DELETE FROM positions;
