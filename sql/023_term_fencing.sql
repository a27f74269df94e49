-- Term-fenced side effects (ledger/coordination/lease.py). Each row the listener writes carries the
-- term of the lease it wrote under (NULL: written before terms were recorded on rows).
ALTER TABLE recent_blocks ADD COLUMN term bigint;
ALTER TABLE expected_operations ADD COLUMN term bigint;
-- An orphaned block's term, and when the block was shown to be off the canonical chain (the node
-- answered another block at its height, or a term's checkpoint passed that height on another
-- block). NULL: recorded without that evidence; reconciliation checks it.
ALTER TABLE orphaned_blocks ADD COLUMN term bigint, ADD COLUMN checked_at timestamptz;

-- A worker applies a message of a lease's term only while that term is current, in the transaction
-- that applies it: this takes the lease's fence lock (shared, until the transaction ends; a takeover
-- takes it exclusively) and then reads the term. PL/pgSQL runs each statement with a new snapshot
-- under READ COMMITTED, so the read sees a takeover that committed while the lock was waited for.
CREATE FUNCTION lease_term_is_current(p_namespace integer, p_lease text, p_term bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(p_namespace, hashtext(p_lease));
    RETURN coalesce((SELECT t.term = p_term FROM listener_terms t WHERE t.name = p_lease), false);
END
$$;
