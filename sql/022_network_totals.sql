-- The network's totals behind energy and bandwidth units (ledger/chain/resources.py), read from
-- getaccountresource on a schedule (the `totals` job), each with the solidified block it was read at.
CREATE TABLE network_totals (
    id                  bigserial PRIMARY KEY,
    block_num           bigint NOT NULL,
    read_at             timestamptz NOT NULL DEFAULT now(),
    total_energy_limit  bigint NOT NULL,
    total_energy_weight bigint NOT NULL,
    total_net_limit     bigint NOT NULL,
    total_net_weight    bigint NOT NULL
);
CREATE INDEX network_totals_latest ON network_totals (block_num DESC, id DESC);
