-- Every message of a scheduled job run accounted, as the listener's operations are
-- (ledger/store/jobruns.py): one row per message, written with the run before anything is sent.

-- One row per message of a run: a pool account (gap, state) or '' (a job of one message, lifecycle).
-- It is closed (done_at) when its work is done, or with a stated `reason` when it ends without it
-- (the request budget spent, deferred past the run's retries, not done after the last send,
-- superseded by the next run of the same job). The scheduler's repair pass sends again the open
-- ones that are due and not being worked on.
CREATE TABLE job_run_items (
    run_id      bigint NOT NULL REFERENCES job_runs (id) ON DELETE CASCADE,
    account     text NOT NULL,
    sends       integer NOT NULL DEFAULT 0,       -- times its message was enqueued
    sent_at     timestamptz,
    due_at      timestamptz NOT NULL DEFAULT now(), -- when the next send is due if still open
    started_at  timestamptz,                      -- a worker is on it (cleared when it stops)
    attempts    integer NOT NULL DEFAULT 0,       -- times a worker took it
    deferrals   integer NOT NULL DEFAULT 0,       -- times its work had to wait (state: the ledger behind)
    last_error  text,
    done_at     timestamptz,
    result      jsonb,
    reason      text,                             -- why it is closed without its work, or why it waits
    PRIMARY KEY (run_id, account)
);
CREATE INDEX job_run_items_open ON job_run_items (due_at) WHERE done_at IS NULL;

-- Per pool account: the last time state reconciliation compared it with the chain's account
-- state, at which solidified block, and what it found; and the last attempt, with why it did not
-- compare when it did not.
CREATE TABLE chain_comparisons (
    account       text PRIMARY KEY,
    compared_at   timestamptz,
    block         bigint,
    differing     integer,                        -- figures that differed (0: the ledger agreed)
    attempted_at  timestamptz NOT NULL,
    reason        text,                           -- the last attempt's, NULL when it compared
    run_id        bigint
);
