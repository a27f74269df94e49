-- The gray release's knob is the share of accounts the NEW path answers (ledger/store/rollout.py),
-- as the plan's steps say it: 10 %, then 50 %, then 100 %; 0 is the rollback.
-- NULL: no operator set it yet, ROLLOUT_START_NEW_PERCENT decides (100 on a fresh install, where
-- to start on a platform cutting over from its TronGrid path).
ALTER TABLE rollout ADD COLUMN new_percent smallint CHECK (new_percent BETWEEN 0 AND 100);
-- A stored share keeps every account where it was: the new path serves the buckets the legacy one
-- did not (bucket >= legacy_percent). The row nobody changed (legacy 0, no updated_by) stays NULL,
-- which the default start of 100 serves the same way.
UPDATE rollout SET new_percent = 100 - legacy_percent WHERE legacy_percent <> 0 OR updated_by IS NOT NULL;
ALTER TABLE rollout DROP COLUMN legacy_percent;
