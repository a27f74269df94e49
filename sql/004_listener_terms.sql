-- Active/standby listeners (listener/leader.py). The fencing term of each lease name is kept here
-- rather than only in listener_checkpoint: a listener can take the lease before any checkpoint
-- exists, and a checkpoint row must hold a real block number. Taking the lease bumps the term
-- here and stamps it on the checkpoint row (if there is one), whose fenced update
-- (`WHERE term = EXCLUDED.term`) then refuses every older term.
CREATE TABLE listener_terms (
    name        text PRIMARY KEY,          -- the checkpoint name: 'main', 'backfill:...'
    term        bigint NOT NULL,
    holder      text,                      -- host:pid of the process that took it, for operators
    acquired_at timestamptz NOT NULL DEFAULT now()
);
