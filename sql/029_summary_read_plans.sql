-- summary_read (sql/028_summary_read.sql) with cached plans for its small statements: only the
-- tail's statement is planned on each call (EXECUTE: its `block_num > start` is selective only with
-- the value known; a generic plan scans every record of the account). Planning all of them on each
-- call cost about a fifth of the function's time.
CREATE OR REPLACE FUNCTION summary_read(
    p_address text, p_checkpoint text, p_after_receiver text, p_after_resource text, p_limit integer,
    OUT r_base_block bigint, OUT r_figures text, OUT r_mark_block bigint, OUT r_mark_time bigint,
    OUT r_now_ms bigint, OUT r_tail json, OUT r_touched json, OUT r_ended json, OUT r_next_end bigint,
    OUT r_page json, OUT r_totals_block bigint, OUT r_totals_read_at timestamptz,
    OUT r_total_energy_limit bigint, OUT r_total_energy_weight bigint, OUT r_total_net_limit bigint,
    OUT r_total_net_weight bigint, OUT r_drift json, OUT r_opening_source text, OUT r_opening_block bigint
)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_names text[];
    v_folded_time bigint;
    v_tail_time bigint;
BEGIN
    SELECT lc.block_num, lc.block_time_ms INTO r_mark_block, r_mark_time
    FROM listener_checkpoint lc WHERE lc.name = p_checkpoint;
    SELECT t.block_num, t.read_at, t.total_energy_limit, t.total_energy_weight, t.total_net_limit,
           t.total_net_weight
    INTO r_totals_block, r_totals_read_at, r_total_energy_limit, r_total_energy_weight, r_total_net_limit,
         r_total_net_weight
    FROM network_totals t ORDER BY t.block_num DESC, t.id DESC LIMIT 1;
    SELECT json_agg(json_build_array(d.what, d.difference::text) ORDER BY d.since_block, d.what) INTO r_drift
    FROM drift d WHERE d.account = p_address AND d.resolved_block IS NULL;
    SELECT o.source, o.block_num INTO r_opening_source, r_opening_block
    FROM position_openings o WHERE o.address = p_address;
    SELECT p.block_num, p.figures::text INTO r_base_block, r_figures
    FROM positions p WHERE p.address = p_address AND p.figures IS NOT NULL;
    IF r_base_block IS NULL THEN
        RETURN;
    END IF;

    -- The records above the folded state, as ledger/store/positions.py load_rows reads them.
    EXECUTE $tail$
    WITH tail AS (
        SELECT s.tx_id, s.op_index, s.block_num, s.tx_index,
               (extract(epoch FROM s.block_time) * 1000)::bigint AS block_time_ms, s.parent_time_ms,
               s.contract_type, s.operation_type, s.resource, s.amount,
               NULL::text AS receiver, false AS lock, 0::bigint AS lock_period
        FROM stake_records s
        WHERE s.owner_address = $1 AND s.block_num > $2 AND s.status IN ('pending', 'confirmed')
        UNION ALL
        SELECT d.tx_id, d.op_index, d.block_num, d.tx_index,
               (extract(epoch FROM d.block_time) * 1000)::bigint, d.parent_time_ms,
               d.contract_type, d.operation_type, d.resource, d.amount,
               d.receiver_address, d.lock, d.lock_period
        FROM delegate_records d
        WHERE d.owner_address = $1 AND d.block_num > $2 AND d.status IN ('pending', 'confirmed')
    )
    SELECT json_agg(json_build_array(t.tx_id, t.op_index, t.block_num, t.tx_index, t.block_time_ms,
                                     t.parent_time_ms, t.contract_type, t.operation_type, t.resource,
                                     t.amount, t.receiver, t.lock, t.lock_period)
                    ORDER BY t.block_num, t.tx_index, t.tx_id, t.op_index),
           max(t.block_time_ms),
           coalesce(array_agg(DISTINCT t.receiver) FILTER (WHERE t.receiver IS NOT NULL), '{}')
    FROM tail t
    $tail$ INTO r_tail, v_tail_time, v_names USING p_address, r_base_block;

    -- Chain time as ledger.positions.chain_time_ms decides it after the tail's replay.
    v_folded_time := (r_figures::json ->> 't')::bigint;
    r_now_ms := greatest(coalesce(r_mark_time, 0), v_folded_time, coalesce(v_tail_time, 0));
    IF r_now_ms = 0 THEN
        r_now_ms := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    END IF;

    IF cardinality(v_names) > 0 THEN
        SELECT json_agg(json_build_array(pr.receiver, pr.resource, pr.unlocked, pr.locked, pr.expire_ms))
        INTO r_touched
        FROM position_receivers pr WHERE pr.address = p_address AND pr.receiver = ANY(v_names);
    END IF;
    SELECT json_object_agg(e.resource, e.amount) INTO r_ended
    FROM (
        SELECT pr.resource, sum(pr.locked)::bigint AS amount FROM position_receivers pr
        WHERE pr.address = p_address AND pr.locked > 0 AND pr.expire_ms >= v_folded_time AND pr.expire_ms < r_now_ms
        GROUP BY pr.resource
    ) e;
    SELECT pr.expire_ms INTO r_next_end FROM position_receivers pr
    WHERE pr.address = p_address AND pr.locked > 0 AND pr.expire_ms >= r_now_ms AND pr.receiver <> ALL(v_names)
    ORDER BY pr.expire_ms LIMIT 1;
    SELECT json_agg(json_build_array(pg.receiver, pg.resource, pg.unlocked, pg.locked, pg.expire_ms)
                    ORDER BY pg.receiver, pg.resource)
    INTO r_page
    FROM (
        SELECT pr.receiver, pr.resource, pr.unlocked, pr.locked, pr.expire_ms FROM position_receivers pr
        WHERE pr.address = p_address AND (pr.receiver, pr.resource) > (p_after_receiver, p_after_resource)
          AND pr.receiver <> ALL(v_names)
        ORDER BY pr.receiver, pr.resource LIMIT p_limit
    ) pg;
END;
$$;
