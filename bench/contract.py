"""The API contract under a long schemathesis run: the CI test's check with many more examples.

    .venv/bin/python -m bench.contract --examples 1000     # the recorded run
    .venv/bin/python -m bench.contract --examples 30       # what tests/test_contract.py runs

Seeds its own database (harness/contract_stack.py: every kind of row, several pages, dead letters),
starts granian as the Procfile does, and runs `schemathesis run` over every operation of
/openapi.json (examples, coverage and fuzzing phases; valid and invalid input) with the checks in
harness/contract_stack.CHECKS. Passes with 0 5xx and 0 schema violations; exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from harness.contract_stack import run_schemathesis, seed_api_data, start_contract_web
from harness.servers import free_port
from harness.stack import new_ledger

DATABASE = "ledger_bench_contract"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000, help="schemathesis --max-examples (per operation)")
    parser.add_argument("--seed", type=int, default=None, help="schemathesis --seed, to replay a run")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server (DBs 4 and 5 are flushed)")
    args = parser.parse_args()

    url = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"
    settings = new_ledger(url, f"{args.redis}/4", f"{args.redis}/5", cursor_secrets=("bench-contract-secret",))
    seed_api_data(url)
    port = free_port()
    web = start_contract_web(settings, port)
    started = time.monotonic()
    try:
        code, output = run_schemathesis(f"http://127.0.0.1:{port}", args.examples, timeout=6 * 3600, seed=args.seed)
    finally:
        web.stop()
    print(output)
    cases = re.search(r"(\d+) generated", output)
    unhandled = web.output().count("Traceback")
    print(
        f"contract: {args.examples} examples an operation, {cases.group(1) if cases else '?'} requests, "
        f"{time.monotonic() - started:.0f}s, schemathesis exit {code}, {unhandled} unhandled errors in the web log"
    )
    return 0 if code == 0 and unhandled == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
