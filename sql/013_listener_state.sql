-- What the active listener is doing (listener/streamer.py's states: following, catching_up,
-- node_behind, node_unreachable, rate_limited, failing), since when, and when the node last
-- showed head_block as its head: the monitor tells a listener waiting for its node from one at
-- the head, and never reports a head it has not seen as current.
ALTER TABLE listener_heartbeats
    ADD COLUMN head_seen_at timestamptz,
    ADD COLUMN state        text,
    ADD COLUMN state_detail text,
    ADD COLUMN state_since  timestamptz;
