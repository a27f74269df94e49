-- Records stored orphaned in a block that orphaned_blocks does not list: listed, unchecked, so that
-- reconciliation (workers/canonical.py) looks at their block like any orphaned block nobody has
-- checked, and restores them if the canonical chain has it.
INSERT INTO orphaned_blocks (block_num, block_id)
SELECT DISTINCT block_num, block_id FROM stake_records WHERE status = 'orphaned'
UNION
SELECT DISTINCT block_num, block_id FROM delegate_records WHERE status = 'orphaned'
ON CONFLICT (block_id) DO NOTHING;
