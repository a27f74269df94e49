"""The contract run's stack, for tests/test_contract.py and bench/contract.py: a small database with
every kind of row the API shows (and the events they make), a web server on it, and the schemathesis command against it.

Account 1 (the first simulator demo account, external id "42") has records of every kind and
status, several pages of them, delegations both ways, unfreeze lots pending / withdrawable /
withdrawn, and there are dead letters; account 2 (external id "43") has nothing, so empty pages and
summaries are covered too; account 3 has no external id.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

import psycopg

from harness.procs import ROOT, Proc
from harness.stack import SIM_ACCOUNTS, settings_env, start_web
from ledger.config import Settings
from ledger.store.events import sequence

# Checks that judge the API against the contract. Left out of schemathesis's "all": the
# authentication and resource-lifecycle checks (every request carries the admin token, which the
# read routes accept too; the admin routes' writes are checked by their own tests) and
# positive_data_acceptance, since some schema-valid values are rightly refused (page x limit past
# the cap, an unknown account or dead letter is a 404, a bulk purge names an actor or all=true).
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,negative_data_rejection,unsupported_method,allow_header_conformance"
)

# The server runs with both tokens, so every route is served (admin) and every read route needs one.
ADMIN_TOKEN = "contract-admin-token-0123456789"
READ_TOKEN = "contract-read-token-0123456789"

T0 = datetime(2025, 1, 1, tzinfo=UTC)
ONE, TWO, THREE = SIM_ACCOUNTS

_STAKES = [
    ("freeze", "FreezeBalanceV2Contract", "ENERGY"),
    ("freeze", "FreezeBalanceV2Contract", "BANDWIDTH"),
    ("freeze", "FreezeBalanceContract", "TRON_POWER"),  # legacy V1
    ("unfreeze", "UnfreezeBalanceV2Contract", "ENERGY"),
    ("withdraw_expire_unfreeze", "WithdrawExpireUnfreezeContract", None),
    ("cancel_all_unfreeze", "CancelAllUnfreezeV2Contract", "BANDWIDTH"),
]
_STATUSES = ("confirmed", "pending", "failed", "orphaned")


def seed_api_data(database_url: str, rows: int = 60) -> None:
    """Empty the API's tables and fill them as described above (`rows` records per list; 0 only
    empties them, so the next test module finds no committed rows)."""
    now = datetime.now(UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE pool_accounts, stake_records, delegate_records, unfreeze_records, dead_letters, positions,"
            " position_receivers, position_openings, events RESTART IDENTITY"
        )
        if rows == 0:
            return
        conn.execute(
            "INSERT INTO pool_accounts (address, label, external_id)"
            " VALUES (%s, 'pool-1', '42'), (%s, NULL, '43'), (%s, 'pool-3', NULL)",
            (ONE, TWO, THREE),
        )
        for i in range(rows):
            block = 1_000 + i
            kind, contract, resource = _STAKES[i % len(_STAKES)]
            conn.execute(
                "INSERT INTO stake_records (tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address,"
                " operation_type, contract_type, resource, amount, status)"
                " VALUES (%s, 0, %s, 'b', %s, %s, %s, %s, %s, %s, %s, %s)",
                (_tx("s", i), block, i % 3, _time(block), ONE, kind, contract, resource, 1_000_000 * (i + 1),
                 _STATUSES[i % len(_STATUSES)]),
            )  # fmt: skip
            owner, receiver = (ONE, THREE) if i % 3 else (THREE, ONE)
            lock = i % 2 == 0
            conn.execute(
                "INSERT INTO delegate_records (tx_id, op_index, block_num, block_id, tx_index, block_time,"
                " owner_address, receiver_address, operation_type, contract_type, resource, amount, lock,"
                " lock_period, lock_expire_time, status) VALUES (%s, 0, %s, 'b', 0, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, %s, %s)",
                (_tx("d", i), block, _time(block), owner, receiver, "undelegate" if i % 5 == 4 else "delegate",
                 "UnDelegateResourceContract" if i % 5 == 4 else "DelegateResourceContract",
                 "ENERGY" if i % 2 else "BANDWIDTH", 500_000 * (i + 1), lock, 86_400 if lock else 0,
                 now + timedelta(days=3) if lock else None, _STATUSES[i % 2]),
            )  # fmt: skip
            status, available = (
                ("pending", now + timedelta(days=10))
                if i % 4 == 0
                else ("pending", now - timedelta(days=1))  # shown as withdrawable
                if i % 4 == 1
                else ("withdrawn", now - timedelta(days=2))
                if i % 4 == 2
                else ("cancelled", now + timedelta(days=5))
            )
            conn.execute(
                "INSERT INTO unfreeze_records (tx_id, op_index, block_num, tx_index, block_time, owner_address,"
                " resource, amount, available_time, status, confirmed, settled_tx_id)"
                " VALUES (%s, 0, %s, 0, %s, %s, %s, %s, %s, %s, true, %s)",
                (_tx("u", i), block, _time(block), ONE, "ENERGY" if i % 2 else "BANDWIDTH", 250_000 * (i + 1),
                 available, status, _tx("w", i) if status == "withdrawn" else None),
            )  # fmt: skip
        for i in range(3):
            conn.execute(
                "INSERT INTO dead_letters (message_id, queue_name, actor_name, args, error_type, error, retries,"
                " redis_message_id) VALUES (%s, 'ledger', 'persist_operation', %s, 'PayloadError', 'bad payload',"
                " %s, %s)",
                (f"m{i}", json.dumps([{"tx_id": "not hex", "n": i}]), i, None if i else "r0"),
            )
        sequence(conn)  # the records' events (written by the tables' triggers), as the relay numbers them


def _tx(prefix: str, i: int) -> str:
    return f"{ord(prefix):02x}{i:062x}"


def _time(block: int) -> datetime:
    return T0 + timedelta(seconds=3 * block)


def start_contract_web(settings: Settings, port: int) -> Proc:
    """granian as the Procfile runs it, on the seeded database, with a known cursor secret, the
    admin API and the read token."""
    env = {
        **settings_env(settings),
        "CURSOR_SECRET": ",".join(settings.cursor_secrets),
        "LOG_LEVEL": "WARNING",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "READ_TOKEN": READ_TOKEN,
        # An event stream ends soon: schemathesis waits for each response's end.
        "EVENTS_STREAM_SECONDS": "0.5",
    }
    return start_web(env, port)


def run_schemathesis(base_url: str, examples: int, timeout: float, seed: int | None = None) -> tuple[int, str]:
    """`schemathesis run` over every operation, the admin routes included (examples, coverage and
    fuzzing phases), with the admin token on every request; its exit code (0: no failure) and its
    output."""
    argv = [
        str(ROOT / ".venv" / "bin" / "schemathesis"),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-color",
        "--header",
        f"Authorization: Bearer {ADMIN_TOKEN}",
    ]
    if seed is not None:
        argv += ["--seed", str(seed)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    return done.returncode, done.stdout + done.stderr
