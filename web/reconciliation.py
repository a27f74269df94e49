"""GET /api/drift (differences between the chain's account state and the ledger),
GET /api/reconciliation/runs (the scheduler's last runs, the accounts each left not done and why,
and what reconciliation recovered) and GET /api/reconciliation/accounts (per pool account: its
last comparison with the chain, at which block, the result, and its last attempt)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ledger.store.jobruns import last_runs
from web.drift import comparisons, list_drift, recovered_count
from web.params import account_from_args, int_param
from web.pg import read_connection
from web.resources import resources
from web.responses import bad_request, json_response, shown

bp = Blueprint("reconciliation", __name__)


@bp.get("/api/drift")
def drift() -> Response:
    res = resources()
    ref = account_from_args(res.accounts, request.args)
    account = ref.account.address if ref is not None else None
    state = request.args.get("state", "open")
    if state not in ("open", "all"):
        raise bad_request(f"state must be open or all (got {shown(state)})")
    limit = int_param(request.args, "limit", 50, 1, 200)
    with read_connection(res.pool) as conn:
        rows = list_drift(conn, account, include_resolved=state == "all", limit=limit)
    return json_response({"success": True, "data": rows, "meta": {"state": state, "limit": limit}})


@bp.get("/api/reconciliation/runs")
def runs() -> Response:
    per_job = int_param(request.args, "per_job", 5, 1, 50)
    with read_connection(resources().pool) as conn:
        rows = last_runs(conn, per_job)
        recovered = recovered_count(conn)
    return json_response({"success": True, "data": rows, "meta": {"recovered_operations": recovered}})


@bp.get("/api/reconciliation/accounts")
def accounts() -> Response:
    res = resources()
    ref = account_from_args(res.accounts, request.args)
    with read_connection(res.pool) as conn:
        rows = comparisons(conn, [ref.account.address] if ref is not None else None)
    return json_response({"success": True, "data": rows})
