"""GET /openapi.json: the API's contract, OpenAPI 3.1, written here as plain Python data.

Why Python and not a YAML file: the limits a client must respect (page size, the page x limit
cap, the kinds, the resources, the echo limit) are the constants the views use, imported below, so
the description cannot drift from the code; and it needs no YAML loader. To change a route:
change the view, then its entry in `_paths()`; tests/test_contract.py fails until both agree
(every Flask route described, every described route served, bodies valid against the schemas,
schemathesis against a live server).

A Flask rule maps to its OpenAPI path mechanically (`<x>` is `{x}`, and `<any(a, b):kind>` one path
per alternative, each with its own body); path parameters may be renamed for the reader, as
`{account}` and `{id}` are here (the errors name them so).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from ledger.domain import INT64_MAX, LISTENER_STATES, RESOURCES
from ledger.store.accounts import EXTERNAL_ID_FORM
from ledger.store.events import EVENT_TYPES
from web.compat import FIELDS as COMPAT_FIELDS
from web.events import DEFAULT_PAGE as EVENTS_DEFAULT_PAGE
from web.events import MAX_PAGE as EVENTS_MAX_PAGE
from web.guards import MAX_BODY_BYTES, READ_PREFIXES
from web.params import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET_ROWS
from web.positions import DEFAULT_RECEIVERS, MAX_RECEIVERS
from web.queries import KINDS
from web.resources import resources
from web.responses import ECHO_LIMIT, dumps

bp = Blueprint("openapi", __name__)

Schema = dict[str, Any]

# An example account for the examples (and for schemathesis's example phase): the first demo
# account of scripts/run's simulator, id 1 on a fresh database.
EXAMPLE_ADDRESS = "TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre"
EXAMPLE_EXTERNAL_ID = "42"  # the external id harness/contract_stack.py gives that account

_REF = "#/components/schemas/"


def ref(name: str) -> Schema:
    return {"$ref": _REF + name}


def nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A closed object: a field the code adds without describing it fails the contract tests."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
    }


INT: Schema = {"type": "integer"}
COUNT: Schema = {"type": "integer", "minimum": 0}
AMOUNT: Schema = {"type": "integer", "description": "sun (1 TRX = 1,000,000 sun), exact"}
TIME: Schema = {"type": "string", "format": "date-time", "pattern": "Z$"}
TEXT: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
RATIO: Schema = nullable({"type": "number", "minimum": 0, "maximum": 1})
UNITS: Schema = nullable(
    {
        "type": "integer",
        "minimum": 0,
        "description": "energy (ENERGY) or bandwidth (BANDWIDTH) units as java-tron computes them from the "
        "network's totals at data.resource_units.block; null for TRON_POWER or before any totals were read",
    }
)


def _components() -> Schema:
    common = {
        "id": nullable(
            {"type": "integer", "minimum": 1, "description": "the ledger's row id; null when TronGrid answered"}
        ),
        "tx_id": ref("TxId"),
        "op_index": COUNT,
        "block_num": COUNT,
        "block_time": TIME,
        "owner_address": ref("Address"),
        "contract_type": TEXT,
        "amount": AMOUNT,
    }
    record_status = {"enum": ["pending", "confirmed", "failed", "orphaned"]}
    components: Schema = {
        "schemas": {
            "Address": {"type": "string", "pattern": "^T[1-9A-HJ-NP-Za-km-z]{33}$", "examples": [EXAMPLE_ADDRESS]},
            "TxId": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "Resource": {"enum": list(RESOURCES)},
            "ExternalId": {
                "type": "string",
                # Printable ASCII; not first: = + - @ (a spreadsheet formula).
                "pattern": "^[!-*,.-<>?A-~][!-~]{0,63}$",
                "description": f"the platform's own id of a pool account: {EXTERNAL_ID_FORM}",
                "examples": [EXAMPLE_EXTERNAL_ID],
            },
            "Error": obj(
                {
                    "success": {"const": False},
                    "error": obj(
                        {
                            "code": {
                                "type": "string",
                                "description": "bad_request, not_found, method_not_allowed, unavailable, "
                                "fallback_budget_spent (503 with Retry-After: the database is down and the TronGrid"
                                " fallback's FALLBACK_REQUESTS_PER_MINUTE are used), internal_error, ...",
                            },
                            "message": {
                                "type": "string",
                                "description": "names the parameter at fault; shows at most "
                                f"{ECHO_LIMIT} characters of what was given",
                            },
                        }
                    ),
                }
            ),
            "PageMeta": obj(
                {
                    "page": {"type": "integer", "minimum": 1},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    "source": {
                        "enum": ["cache", "database", "legacy", "fallback"],
                        "description": "which path answered: the cache or PostgreSQL (native); `legacy`: the gray"
                        " release sends this account to TronGrid's account history; `fallback`: PostgreSQL and the"
                        " cache both failed and TronGrid answered (confirmed rows only, `id` null, never cached)",
                    },
                    "next_cursor": nullable(
                        {
                            "type": "string",
                            "description": "pass as `cursor` for the next page (null on legacy and fallback pages:"
                            " page through them with `page`)",
                        }
                    ),
                }
            ),
            "StakeRecord": obj(
                {
                    **common,
                    "operation_type": {
                        "enum": ["freeze", "unfreeze", "withdraw_expire_unfreeze", "cancel_all_unfreeze"]
                    },
                    "resource": nullable(ref("Resource")),
                    "status": record_status,
                }
            ),
            "DelegateRecord": obj(
                {
                    **common,
                    "operation_type": {"enum": ["delegate", "undelegate"]},
                    "resource": ref("Resource"),
                    "status": record_status,
                    "receiver_address": ref("Address"),
                    "lock": BOOL,
                    "lock_period": {"type": "integer", "minimum": 0, "description": "blocks (3 s each)"},
                    "lock_expire_time": nullable(TIME),
                }
            ),
            "UnfreezeRecord": obj(
                {
                    **common,
                    "operation_type": {"const": "unfreeze"},
                    "resource": ref("Resource"),
                    "status": {"enum": ["pending", "withdrawable", "withdrawn", "cancelled", "orphaned"]},
                    "available_time": TIME,
                    "settled_tx_id": nullable(ref("TxId")),
                }
            ),
            "Summary": obj(
                {
                    "account_id": {"type": "integer", "minimum": 1},
                    "label": nullable(TEXT),
                    "owner_address": ref("Address"),
                    "as_of_block": {"type": "integer", "description": "the data's block (the listener's checkpoint)"},
                    "as_of_time": TIME,
                    "resources": obj(
                        dict.fromkeys(
                            RESOURCES,
                            obj(
                                {
                                    "staked": {**AMOUNT, "description": "frozenV2: excludes delegated-out stake"},
                                    "available": {**AMOUNT, "description": "free to delegate or unstake"},
                                    "delegated": obj(
                                        {
                                            "total": AMOUNT,
                                            "locked": AMOUNT,
                                            "unlocked": AMOUNT,
                                            "receivers_count": {
                                                **COUNT,
                                                "description": "receiver records over all pages",
                                            },
                                            "receivers": {
                                                "type": "array",
                                                "description": "this page's receiver records (meta.limit"
                                                " over both resources, by receiver address then resource);"
                                                " the totals above are over all of them",
                                                "items": obj(
                                                    {
                                                        "receiver_address": ref("Address"),
                                                        "locked": AMOUNT,
                                                        "unlocked": AMOUNT,
                                                        "lock_end": nullable(TIME),
                                                        "units": UNITS,
                                                    }
                                                ),
                                            },
                                        }
                                    ),
                                    "unstaking": obj(
                                        {
                                            "total": AMOUNT,
                                            "lots": {
                                                "type": "array",
                                                "items": obj({"amount": AMOUNT, "expire_time": TIME}),
                                            },
                                        }
                                    ),
                                    "withdrawable": AMOUNT,
                                    "staked_v1": {**AMOUNT, "description": "Stake 1.0 (FreezeBalance) still frozen"},
                                    "legacy_v1": {**AMOUNT, "deprecated": True, "description": "= staked_v1"},
                                    "units": obj(
                                        {"staked": UNITS, "available": UNITS, "delegated": UNITS, "unstaking": UNITS}
                                    ),
                                }
                            ),
                        )
                    ),
                    "withdrawable_now": AMOUNT,
                    "resource_units": nullable(
                        obj(
                            {
                                "block": {**COUNT, "description": "the solidified block the totals were read at"},
                                "read_at": TIME,
                                "total_energy_limit": COUNT,
                                "total_energy_weight": COUNT,
                                "total_net_limit": COUNT,
                                "total_net_weight": COUNT,
                            }
                        )
                    ),
                }
            ),
            "Drift": obj(
                {
                    "id": {"type": "integer", "minimum": 1},
                    "account": ref("Address"),
                    "what": {
                        "type": "string",
                        "description": "staked_v2:<res>, staked_v1:<res>, delegated_out:<res>, unfreezing",
                    },
                    "chain_amount": AMOUNT,
                    "ledger_amount": AMOUNT,
                    "difference": {"type": "integer", "description": "chain - ledger, sun"},
                    "since_block": COUNT,
                    "checked_block": COUNT,
                    "first_seen": {"type": "string", "format": "date-time"},
                    "last_seen": {"type": "string", "format": "date-time"},
                    "resolved_block": nullable(COUNT),
                    "resolved_at": nullable({"type": "string", "format": "date-time"}),
                }
            ),
            "JobRun": obj(
                {
                    "job": {"enum": ["gap", "state", "lifecycle", "totals"]},
                    "window_start": {"type": "string", "format": "date-time"},
                    "scheduled_at": {"type": "string", "format": "date-time"},
                    "holder": nullable(TEXT),
                    "messages": COUNT,
                    "done": COUNT,
                    "finished_at": nullable({"type": "string", "format": "date-time"}),
                    "result": {"type": "object", "description": "summed counts, e.g. recovered, compared, drift"},
                    "not_done": {
                        "type": "array",
                        "description": "accounts (at most 20) still open, or closed without their work, and why",
                        "items": obj(
                            {
                                "account": {"type": "string", "description": "empty for a job of one message"},
                                "open": BOOL,
                                "sends": COUNT,
                                "reason": nullable(TEXT),
                            }
                        ),
                    },
                }
            ),
            "ChainComparison": obj(
                {
                    "account": TEXT,
                    "compared_at": nullable({"type": "string", "format": "date-time"}),
                    "block": nullable(COUNT),
                    "differing": nullable(COUNT),
                    "result": {
                        "type": "string",
                        "description": "`agrees`, `differs in N figure(s)` (GET /api/drift), or `never compared`",
                    },
                    "attempted_at": nullable({"type": "string", "format": "date-time"}),
                    "reason": nullable({**TEXT, "description": "why the last attempt did not compare"}),
                }
            ),
            "Event": obj(
                {
                    "id": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "increases in the order events are committed; the feed's cursor and a"
                        " webhook's idempotency key",
                    },
                    "type": {"enum": list(EVENT_TYPES)},
                    "account": nullable({**ref("Address"), "description": "null: an event of the service"}),
                    "block_num": nullable(COUNT),
                    "block_time": nullable({**TIME, "description": "the block's time: the chain's time of the event"}),
                    "created_at": {**TIME, "description": "when the ledger wrote the event"},
                    "data": {"type": "object", "description": "depends on `type`: see docs/API.md, Events"},
                }
            ),
            "Check": {
                "oneOf": [
                    obj({"ok": {"const": True}, "latency_ms": {"type": "number", "minimum": 0}}),
                    obj({"ok": {"const": False}, "error": {"type": "string", "description": "exception type only"}}),
                ]
            },
            "Ready": obj(
                {
                    "success": BOOL,
                    "status": {
                        "enum": ["ready", "degraded", "unavailable"],
                        "description": "degraded: the cache Redis is away, every page comes from PostgreSQL",
                    },
                    "checks": obj({"postgres": ref("Check"), "redis": ref("Check")}),
                    "ingest": nullable(ref("Ingest")),
                }
            ),
            # ledger.store.accounting.Heads.to_dict
            "Ingest": obj(
                {
                    "head": COUNT,
                    "solid": COUNT,
                    "checkpoint": nullable(COUNT),
                    "persisted": nullable(COUNT),
                    "persisted_at": nullable({"type": "string", "format": "date-time"}),
                    "in_flight": COUNT,
                    "lag_blocks": obj(
                        {
                            "listener": nullable(COUNT),
                            "workers": nullable(COUNT),
                            "total": nullable({**COUNT, "description": "head - persisted: what users call lag"}),
                        }
                    ),
                    "lag_unknown": nullable(
                        {**TEXT, "description": "why the listener's and the total lag are unknown (null: known)"}
                    ),
                    "listener": obj(
                        {
                            "status": {"enum": ["online", "stale", "offline"]},
                            "state": nullable({"enum": list(LISTENER_STATES)}),
                            "state_detail": nullable(TEXT),
                            "head_block": nullable(
                                {**INT, "description": "the node's head as the listener last saw it"}
                            ),
                            "node_behind_by": nullable(
                                {**COUNT, "description": "blocks the node's head is below the checkpoint"}
                            ),
                            "beat_age_s": nullable({"type": "number", "minimum": 0}),
                        }
                    ),
                }
            ),
        },
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"},
            "read": {
                "type": "http",
                "scheme": "bearer",
                "description": "READ_TOKEN (or ADMIN_TOKEN), when the service is run with READ_TOKEN set",
            },
        },
        "responses": {
            "BadRequest": _error("a parameter is missing or malformed; the message names it"),
            "NotFound": _error("no such pool account, dead letter or endpoint"),
            "Unavailable": _error(
                "PostgreSQL is unreachable or the pool is exhausted (and, for records, no TronGrid fallback could"
                " answer: code unavailable or fallback_budget_spent); retry after Retry-After seconds"
            ),
        },
    }
    schemas = components["schemas"]
    schemas["DeadLetter"] = obj(_DEAD_LETTER)
    schemas["DeadLetterWithTraceback"] = obj({**_DEAD_LETTER, "traceback": nullable(TEXT)})
    for kind, name in _RECORD_SCHEMAS.items():
        schemas["Compat" + name] = _compat_record(kind, schemas[name])
    return components


# ledger/deadletters.py's columns, as the admin API shows them.
_DEAD_LETTER: Schema = {
    "id": {"type": "integer", "minimum": 1},
    "message_id": TEXT,
    "queue_name": TEXT,
    "actor_name": TEXT,
    "args": {"type": "array"},
    "kwargs": {"type": "object"},
    "reason": {
        "type": "string",
        "description": "retries_exhausted, permanent_error, unknown_actor, expired, unrecorded",
    },
    "error_type": TEXT,
    "error": TEXT,
    "attempts": COUNT,
    "retries": COUNT,
    "failed_at": {"type": "string", "format": "date-time"},
    "redis_message_id": nullable(TEXT),
}


def _compat_record(kind: str, native: Schema) -> Schema:
    """A record in the compatibility shape (web/compat.py): the native field's schema under its new name."""
    fields = {"pool_account_id": {**ref("ExternalId"), "description": "the platform's external id of the account"}}
    for name, native_name in COMPAT_FIELDS[kind]:
        fields[name] = native["properties"][native_name]
    fields["created_at"] = {**TIME, "description": "the block's time (not when the ledger stored the record)"}
    return obj(fields)


def _error(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


def _ok(data: Schema, description: str, meta: Schema | None = None) -> Schema:
    body = obj({"success": {"const": True}, "data": data, **({"meta": meta} if meta else {})})
    return {"description": description, "content": {"application/json": {"schema": body}}}


def _query(name: str, schema: Schema, description: str, *, required: bool = False, example: Any = None) -> Schema:
    param = {"name": name, "in": "query", "required": required, "schema": schema, "description": description}
    if example is not None:
        param["example"] = example
    return param


def _path(name: str, schema: Schema, description: str, example: Any) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
        "example": example,
    }


_ACCOUNT_FORMS = "a pool account id (e.g. 1) or its TRON address (base58 T..., or hex 41...)"
_DB_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "503": {"$ref": "#/components/responses/Unavailable"},
}

_RECORD_SCHEMAS = {"stake": "StakeRecord", "delegate": "DelegateRecord", "unfreeze": "UnfreezeRecord"}
_RECORD_WHAT = {
    "stake": "freeze, unfreeze, withdraw and cancel records of the account",
    "delegate": "delegate and undelegate records, the account as owner or as receiver",
    "unfreeze": "unfreeze lots with available_time; status pending -> withdrawable -> withdrawn / cancelled",
}


_EXTERNAL = "the platform's external id of the account, instead of pool_account_id (not both)"
_COMPAT_ACCOUNT = "the platform's external id of the account (on /compat routes pool_account_id means that id)"


def _account_params(compat: bool) -> list[Schema]:
    """One of the two names the account; giving both is a 400."""
    if compat:
        return [
            _query("pool_account_id", ref("ExternalId"), _COMPAT_ACCOUNT, example=EXAMPLE_EXTERNAL_ID),
            _query("external_id", ref("ExternalId"), "the same, under its native name (not both)"),
        ]
    return [
        _query("pool_account_id", {"type": "string", "minLength": 1}, _ACCOUNT_FORMS, example="1"),
        _query("external_id", ref("ExternalId"), _EXTERNAL),
    ]


def _records(kind: str, compat: bool = False) -> Schema:
    params = [
        *_account_params(compat),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
            "rows a page",
        ),
        _query(
            "page",
            {"type": "integer", "minimum": 1, "default": 1},
            f"numbered page for shallow reads: page x limit at most {MAX_OFFSET_ROWS:,} (deeper: follow the cursor);"
            " not with cursor",
        ),
        _query(
            "cursor",
            {"type": "string", "maxLength": 200},
            "meta.next_cursor of the previous page of the same list, unchanged (signed: an altered one is a 400)",
        ),
    ]
    description = "Newest first (block, transaction, operation). Amounts are integers in sun."
    if compat:
        description += (
            " The compatibility shape: the plan's field names (tx_hash, block_number, created_at, resource_type,"
            " pool_account_id = the platform's external id), the same rows, meta and cache as the native list."
        )
    return {
        "get": {
            "operationId": f"list_{kind}_records" + ("_compat" if compat else ""),
            "summary": _RECORD_WHAT[kind],
            "description": description,
            "tags": ["compat" if compat else "records"],
            "parameters": params,
            "responses": {
                "200": _ok(
                    {"type": "array", "items": ref(("Compat" if compat else "") + _RECORD_SCHEMAS[kind])},
                    "one page",
                    ref("PageMeta"),
                ),
                **_DB_ERRORS,
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }
    }


def _summary(operation_id: str, params: list[Schema]) -> Schema:
    params = [
        *params,
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": MAX_RECEIVERS, "default": DEFAULT_RECEIVERS},
            "receiver records a page (both resources together)",
        ),
        _query(
            "cursor",
            {"type": "string", "maxLength": 200},
            "meta.next_cursor of the previous page of the same account's summary, unchanged (signed: an altered"
            " one is a 400)",
        ),
    ]
    return {
        "get": {
            "operationId": operation_id,
            "summary": "positions per resource as java-tron keeps them: staked, available, delegated (locked and"
            " unlocked per receiver), unstaking lots, withdrawable, Stake 1.0 (staked_v1)",
            "tags": ["summary"],
            "parameters": params,
            "responses": {
                "200": _ok(
                    ref("Summary"),
                    "the summary",
                    obj(
                        {
                            "source": {"enum": ["cache", "database"]},
                            "shortfall": {
                                "type": "object",
                                "additionalProperties": AMOUNT,
                                "description": "sun the ledger's arithmetic was short of, by what (an unstake or "
                                "undelegate of stake it never saw...; never served as a balance)",
                            },
                            "chain_drift": {
                                "type": "object",
                                "additionalProperties": AMOUNT,
                                "description": "open differences with the chain's account state, by what: chain "
                                "minus ledger (state reconciliation, GET /api/drift)",
                            },
                            "drift": {
                                "type": "object",
                                "additionalProperties": AMOUNT,
                                "deprecated": True,
                                "description": "`shortfall` and `chain_drift` in one map (the chain's keys "
                                "prefixed `chain.`), for clients that read it",
                            },
                            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RECEIVERS},
                            "next_cursor": nullable(
                                {
                                    "type": "string",
                                    "description": "pass as `cursor` for the next page of receivers (null: the last)",
                                }
                            ),
                            "opening": obj(
                                {
                                    "source": {
                                        "enum": ["chain", "history", None],
                                        "description": "chain: a snapshot of the account's state at `block`; "
                                        "history: its whole history was backfilled; null: no opening position",
                                    },
                                    "block": nullable(INT),
                                },
                                {"warning": TEXT},
                            ),
                        }
                    ),
                ),
                **_DB_ERRORS,
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }
    }


def _paths() -> dict[str, Schema]:
    paths = {f"/api/{kind}/records": _records(kind) for kind in KINDS}
    paths.update({f"/compat/api/{kind}/records": _records(kind, compat=True) for kind in KINDS})
    paths["/api/accounts/{account}/summary"] = _summary(
        "account_summary", [_path("account", {"type": "string", "minLength": 1}, _ACCOUNT_FORMS, "1")]
    )
    paths["/api/summary"] = _summary("account_summary_by_query", _account_params(compat=False))
    reclaim = {
        "receiver_address": ref("Address"),
        "resource": {"enum": ["BANDWIDTH", "ENERGY"]},
        "amount": AMOUNT,
        "trx": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$", "description": "the amount in TRX, exact"},
        "units": UNITS,
        "lock_end": nullable({**TIME, "description": "null: an unlocked delegation"}),
    }
    paths["/api/accounts/{account}/reclaimable"] = {
        "get": {
            "operationId": "account_reclaimable",
            "summary": "delegations the account can undelegate now (locks ended, unlocked ones) and locks ending"
            " within the hour, at the chain time of the listener's checkpoint",
            "tags": ["summary"],
            "parameters": [_path("account", {"type": "string", "minLength": 1}, _ACCOUNT_FORMS, "1")],
            "responses": {
                "200": _ok(
                    obj(
                        {
                            "owner_address": ref("Address"),
                            "as_of_block": {"type": "integer"},
                            "as_of_time": {**TIME, "description": "the chain time the lists are of"},
                            "units_block": nullable(COUNT),
                            "reclaimable": {
                                "type": "array",
                                "items": obj(
                                    {**reclaim, "ended_seconds_ago": nullable(COUNT)},
                                ),
                            },
                            "ending_within_hour": {
                                "type": "array",
                                "items": obj({**reclaim, "ends_in_seconds": {"type": "integer", "minimum": 1}}),
                            },
                        }
                    ),
                    "the lists",
                    obj({"source": {"enum": ["cache", "database"]}}),
                ),
                **_DB_ERRORS,
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }
    }
    paths["/api/dead-letters"] = {
        "get": {
            "operationId": "dead_letter_counts",
            "summary": "how many worker messages ended dead, per actor and reason (contents: the admin API)",
            "tags": ["operations"],
            "responses": {
                "200": _ok(
                    obj(
                        {
                            "total": COUNT,
                            "by_actor": {"type": "object", "additionalProperties": COUNT},
                            "by_reason": {"type": "object", "additionalProperties": COUNT},
                        },
                        {"in_broker": COUNT},
                    ),
                    "counts only",
                ),
                **_DB_ERRORS,
            },
        }
    }
    figures = {
        "type": "object",
        "description": "figures as measured (web/monitor.py); a part that failed is {error}",
    }
    paths["/health/tron-data-health"] = {
        "get": {
            "operationId": "tron_data_health",
            "summary": "healthy (listener online and reading, latency < 300,000 ms, hit rate > 0.8), warning, or error;"
            " `rules` gives each rule's result and figures",
            "tags": ["health"],
            "responses": {
                "200": {
                    "description": "healthy or warning, with the reasons and figures",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "500": {
                    "description": "error: it cannot tell (a dependency it reads failed), or the node is behind the"
                    " listener's checkpoint",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
            },
        }
    }
    paths["/api/monitor"] = {
        "get": {
            "operationId": "monitor",
            "summary": "every monitor figure (the status page's data): counts and measurements, no message contents",
            "tags": ["health"],
            "responses": {"200": _ok(figures, "the figures")},
        }
    }
    paths["/status"] = {
        "get": {
            "operationId": "status_page",
            "summary": "the status page for a person (HTML, refreshes itself)",
            "tags": ["health"],
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus text format; the same from any web process or instance",
            "tags": ["health"],
            "responses": {"200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }
    }
    paths["/api/drift"] = {
        "get": {
            "operationId": "list_drift",
            "summary": "differences between the chain's account state and the ledger, most recently seen first",
            "tags": ["operations"],
            "parameters": [
                _query("pool_account_id", {"type": "string", "minLength": 1}, _ACCOUNT_FORMS + " (default: all)"),
                _query("external_id", ref("ExternalId"), _EXTERNAL),
                _query("state", {"enum": ["open", "all"], "default": "open"}, "open rows only, or resolved ones too"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}, "rows"),
            ],
            "responses": {
                "200": _ok(
                    {"type": "array", "items": ref("Drift")},
                    "the rows",
                    obj(
                        {"state": {"enum": ["open", "all"]}, "limit": {"type": "integer", "minimum": 1, "maximum": 200}}
                    ),
                ),
                **_DB_ERRORS,
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }
    }
    event_filters = [
        _query("account", {"type": "string", "minLength": 1}, _ACCOUNT_FORMS + " (default: every account)"),
        _query(
            "types",
            {"type": "string", "minLength": 1},
            "comma-separated event types (default: all): " + ", ".join(EVENT_TYPES),
            example="operation.confirmed,delegation.lock_ended",
        ),
    ]
    paths["/api/events"] = {
        "get": {
            "operationId": "list_events",
            "summary": "the event log after a cursor, oldest first (docs/API.md, Events)",
            "tags": ["events"],
            "parameters": [
                _query("after", {"type": "integer", "minimum": 0, "default": 0}, "an event id: events after it"),
                *event_filters,
                _query(
                    "limit",
                    {"type": "integer", "minimum": 1, "maximum": EVENTS_MAX_PAGE, "default": EVENTS_DEFAULT_PAGE},
                    "events",
                ),
            ],
            "responses": {
                "200": _ok(
                    {"type": "array", "items": ref("Event")},
                    "the events",
                    obj(
                        {
                            "after": COUNT,
                            "limit": {"type": "integer", "minimum": 1, "maximum": EVENTS_MAX_PAGE},
                            "next_cursor": {
                                **COUNT,
                                "description": "pass as `after` for the next page: the last event's id, or `after`"
                                " when the page is empty",
                            },
                        }
                    ),
                ),
                **_DB_ERRORS,
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }
    }
    paths["/api/events/stream"] = {
        "get": {
            "operationId": "stream_events",
            "summary": "the event log as Server-Sent Events: each event's id, type and JSON; ends after"
            " EVENTS_STREAM_SECONDS (EventSource reconnects with Last-Event-ID)",
            "tags": ["events"],
            "parameters": [
                _query("after", {"type": "integer", "minimum": 0, "default": 0}, "an event id: events after it"),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "description": "the last event id seen (EventSource sends it when it reconnects);"
                    " wins over `after`",
                },
                *event_filters,
            ],
            "responses": {
                "200": {
                    "description": "`id: <event id>`, `event: <type>`, `data: <Event JSON>` per event",
                    "content": {
                        "text/event-stream": {
                            "schema": obj(
                                {
                                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                                    "event": {"enum": list(EVENT_TYPES)},
                                    "data": {
                                        "type": "string",
                                        "contentMediaType": "application/json",
                                        "contentSchema": ref("Event"),
                                    },
                                }
                            )
                        }
                    },
                },
                **_DB_ERRORS,
                "404": {"$ref": "#/components/responses/NotFound"},
                "429": _error(
                    "this web process serves as many streams as it may at once (code too_many_streams); retry after"
                    " Retry-After seconds"
                ),
            },
        }
    }
    paths["/api/reconciliation/runs"] = {
        "get": {
            "operationId": "reconciliation_runs",
            "summary": "the scheduler's last runs per job, and how many operations reconciliation recovered",
            "tags": ["operations"],
            "parameters": [
                _query("per_job", {"type": "integer", "minimum": 1, "maximum": 50, "default": 5}, "runs per job"),
            ],
            "responses": {
                "200": _ok(
                    {"type": "array", "items": ref("JobRun")},
                    "newest first per job",
                    obj({"recovered_operations": COUNT}),
                ),
                **_DB_ERRORS,
            },
        }
    }
    paths["/api/reconciliation/accounts"] = {
        "get": {
            "operationId": "reconciliation_accounts",
            "summary": "per pool account: when state reconciliation last compared it with the chain, at which "
            "solidified block, the result, and its last attempt (why it did not compare, when it did not)",
            "tags": ["operations"],
            "parameters": [
                _query("pool_account_id", {"type": "string", "minLength": 1}, _ACCOUNT_FORMS + " (default: all)"),
                _query("external_id", ref("ExternalId"), _EXTERNAL),
            ],
            "responses": {
                "200": _ok({"type": "array", "items": ref("ChainComparison")}, "in the order accounts were added"),
                **_DB_ERRORS,
                "404": {"$ref": "#/components/responses/NotFound"},
            },
        }
    }
    paths["/health/live"] = {
        "get": {
            "operationId": "live",
            "summary": "the process answers (no dependency checked)",
            "tags": ["health"],
            "responses": {
                "200": {
                    "description": "alive",
                    "content": {
                        "application/json": {"schema": obj({"success": {"const": True}, "status": {"const": "ok"}})}
                    },
                }
            },
        }
    }
    ready = {"application/json": {"schema": ref("Ready")}}
    paths["/health/ready"] = {
        "get": {
            "operationId": "ready",
            "summary": "can serve: PostgreSQL answers (the cache Redis is checked too: without it, degraded)",
            "tags": ["health"],
            "responses": {
                "200": {"description": "ready, or degraded (no cache)", "content": ready},
                "503": {"description": "PostgreSQL is away (`checks` says so)", "content": ready},
            },
        }
    }
    paths["/api/ingest"] = {
        "get": {
            "operationId": "ingest",
            "summary": "chain head, solidified block, listener checkpoint, persisted watermark, and the lags",
            "tags": ["health"],
            "responses": {
                "200": _ok(ref("Ingest"), "the heads (docs/RELIABILITY.md)"),
                "503": {"$ref": "#/components/responses/Unavailable"},
            },
        }
    }
    counters = {
        name: COUNT
        for name in ("hits", "misses", "errors", "bypassed", "fills", "coalesced", "fallbacks", "local_hits")
    }
    paths["/api/cache/stats"] = {
        "get": {
            "operationId": "cache_stats",
            "summary": "cache hit/miss counters: all web processes (from Redis) and this process",
            "tags": ["health"],
            "responses": {
                "200": _ok(
                    obj(
                        {
                            "hits": nullable(COUNT),
                            "misses": nullable(COUNT),
                            "local_hits": nullable(COUNT),
                            "errors": COUNT,
                            "hit_ratio": RATIO,
                            "process": obj({"pid": INT, **counters, "hit_ratio": RATIO}),
                        }
                    ),
                    "counters (hits/misses null when the cache Redis cannot be read)",
                )
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "this document",
            "tags": ["meta"],
            "responses": {
                "200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}
            },
        }
    }
    return paths


ADMIN_ROLLOUT = "/admin/rollout"
_ADMIN_LIMIT = 200  # web/admin.py's page size cap


def _admin_op(operation_id: str, summary: str, responses: Schema, **more: Any) -> Schema:
    errors = {
        "401": _error("no or a wrong `Authorization: Bearer <ADMIN_TOKEN>`"),
        "503": {"$ref": "#/components/responses/Unavailable"},
    }
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["admin"],
        "security": [{"bearer": []}],
        **more,
        "responses": {**responses, **errors},
    }


def _admin_paths() -> dict[str, Schema]:
    """Admin routes (web/admin.py), described only when served (with ADMIN_TOKEN), since without a
    token they do not exist at all."""
    percent: Schema = {"type": "integer", "minimum": 0, "maximum": 100}
    setting = {
        "new_percent": {**percent, "description": "share of accounts the new path (PostgreSQL and cache) answers"},
        "legacy_percent": {**percent, "description": "100 - new_percent: the accounts TronGrid answers"},
        "shadow_percent": {**percent, "description": "share of new-path answers compared with the legacy one"},
        "set_by_operator": {"type": "boolean", "description": "false: ROLLOUT_START_NEW_PERCENT applies"},
    }
    rollout = obj(
        {
            **setting,
            "accounts": obj({"new": COUNT, "legacy": COUNT}),
            "legacy_path": {"type": "boolean", "description": "false: no TRON_NODE_URL, the new path answers all"},
            "refresh_seconds": {"type": "number", "description": "every web process re-reads the setting this often"},
            "this_process": obj(setting),
        }
    )
    dead_letter_id = _path(
        "id", {"type": "integer", "minimum": 1, "maximum": INT64_MAX}, "a dead letter's id (GET /admin/dead-letters)", 1
    )
    bad, missing = (
        {"400": {"$ref": "#/components/responses/BadRequest"}},
        {"404": {"$ref": "#/components/responses/NotFound"}},
    )
    bulk = [
        _query("actor", {"type": "string", "minLength": 1}, "only the dead letters of this actor"),
        _query("all", {"enum": ["true", "false"]}, "all=true: every dead letter (required when no actor is named)"),
    ]
    no_redis = {
        "501": _error("the broker is RabbitMQ: messages held by workers are read from the Redis broker only"),
    }
    requeued = obj({"requeued": {"type": "array", "items": TEXT, "description": "message ids sent again"}})
    purged = obj({"purged": COUNT})
    held = obj(
        {
            "message_id": TEXT,
            "redis_message_id": TEXT,
            "queue": TEXT,
            "actor": nullable(TEXT),
            "args": nullable({"type": "array"}),
        }
    )
    return {
        "/admin/dead-letters": {
            "get": _admin_op(
                "admin_list_dead_letters",
                "admin: dead letters with their arguments and errors, newest first (keyset pages)",
                {
                    "200": _ok(
                        {"type": "array", "items": ref("DeadLetter")},
                        "one page (without tracebacks: GET /admin/dead-letters/{id} has it)",
                        obj(
                            {
                                "limit": {"type": "integer", "minimum": 1, "maximum": _ADMIN_LIMIT},
                                "next_before_id": nullable({"type": "integer", "minimum": 1}),
                            }
                        ),
                    ),
                    **bad,
                },
                parameters=[
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": _ADMIN_LIMIT, "default": 50}, "rows"),
                    _query(
                        "before_id",
                        {"type": "integer", "minimum": 1, "maximum": INT64_MAX},
                        "meta.next_before_id of the previous page",
                    ),
                    _query("actor", TEXT, "the actor's name, exactly"),
                    _query("error", TEXT, "a case-insensitive part of the error type or message"),
                ],
            )
        },
        "/admin/dead-letters/{id}": {
            "get": _admin_op(
                "admin_show_dead_letter",
                "admin: one dead letter, with its traceback",
                {"200": _ok(ref("DeadLetterWithTraceback"), "the dead letter"), **bad, **missing},
                parameters=[dead_letter_id],
            ),
            "delete": _admin_op(
                "admin_purge_dead_letter",
                "admin: delete one dead letter for good, with the broker's copy",
                {"200": _ok(purged, "deleted"), **bad, **missing},
                parameters=[dead_letter_id],
            ),
        },
        "/admin/dead-letters/{id}/requeue": {
            "post": _admin_op(
                "admin_requeue_dead_letter",
                "admin: send one dead letter's message again (same message id, retries reset)",
                {"200": _ok(requeued, "sent"), **bad, **missing},
                parameters=[dead_letter_id],
            )
        },
        "/admin/dead-letters/requeue": {
            "post": _admin_op(
                "admin_requeue_dead_letters",
                "admin: send again every dead letter of an actor, or every one with all=true",
                {"200": _ok(requeued, "sent"), **bad},
                parameters=bulk,
            )
        },
        "/admin/dead-letters/purge": {
            "post": _admin_op(
                "admin_purge_dead_letters",
                "admin: delete every dead letter of an actor, or every one with all=true",
                {"200": _ok(purged, "deleted"), **bad},
                parameters=bulk,
            )
        },
        "/admin/in-flight": {
            "get": _admin_op(
                "admin_in_flight",
                "admin: the messages each worker holds, alive or not (Redis broker)",
                {
                    "200": _ok(
                        {
                            "type": "array",
                            "items": obj(
                                {
                                    "worker_id": TEXT,
                                    "alive": BOOL,
                                    "last_seen_ms_ago": INT,
                                    "messages": {"type": "array", "items": held},
                                }
                            ),
                        },
                        "per worker",
                    ),
                    **no_redis,
                },
            )
        },
        "/admin/recover": {
            "post": _admin_op(
                "admin_recover",
                "admin: put back the messages held by workers whose heartbeat stopped (Redis broker)",
                {
                    "200": _ok(
                        obj(
                            {
                                "dead_workers": COUNT,
                                "by_queue": {"type": "object", "additionalProperties": COUNT},
                                "messages": COUNT,
                            }
                        ),
                        "what was moved back",
                    ),
                    **no_redis,
                },
            )
        },
        **_admin_webhook_paths(bad, missing),
        ADMIN_ROLLOUT: {
            "get": _admin_op(
                "admin_get_rollout",
                "admin: the gray release setting, stored and as this process follows it",
                {"200": _ok(rollout, "the setting")},
            ),
            "put": _admin_op(
                "admin_put_rollout",
                "admin: change the share of accounts answered by the new path (10, 50, 100; 0 = rollback: every "
                "account on the legacy TronGrid path) and/or the share of its answers compared with the legacy one "
                "(shadow); every web process follows within ROLLOUT_REFRESH_SECONDS",
                {"200": _ok(rollout, "the new setting"), **bad, "413": _error(f"a body over {MAX_BODY_BYTES} bytes")},
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "minProperties": 1,
                                "properties": {"new_percent": percent, "shadow_percent": percent},
                            }
                        }
                    },
                },
            ),
        },
    }


def _admin_webhook_paths(bad: Schema, missing: Schema) -> dict[str, Schema]:
    """web/admin_webhooks.py."""
    webhook_id = _path("id", {"type": "integer", "minimum": 1, "maximum": INT64_MAX}, "a subscription's id", 1)
    strings = {"type": "array", "items": {"type": "string"}}
    fields = {
        "id": {"type": "integer", "minimum": 1},
        "url": TEXT,
        "types": {"type": "array", "items": {"enum": list(EVENT_TYPES)}, "description": "empty: every type"},
        "accounts": {"type": "array", "items": ref("Address"), "description": "empty: every account"},
        "enabled": BOOL,
        "after_event_id": {**COUNT, "description": "the events up to this one were handed to deliveries"},
        "rotating_secret": {"type": "boolean", "description": "the previous secret still signs too"},
        "created_at": TIME,
    }
    secret = {"type": "string", "description": "the signing secret: shown in this answer only"}
    too_big = {"413": _error(f"a body over {MAX_BODY_BYTES} bytes")}
    figures = obj(
        {
            "subscriptions": obj({"enabled": COUNT, "disabled": COUNT}),
            "pending": COUNT,
            "dead": COUNT,
            "oldest_undelivered_s": nullable({"type": "number", "minimum": 0}),
        }
    )
    switch = {
        f"/admin/webhooks/{{id}}/{action}": {
            "post": _admin_op(
                f"admin_{action}_webhook",
                f"admin: {action} a subscription"
                + (" (deliveries wait)" if action == "disable" else " (what waited is sent)"),
                {"200": _ok(obj(fields), "the subscription"), **bad, **missing},
                parameters=[webhook_id],
            )
        }
        for action in ("disable", "enable")
    }
    return {
        "/admin/webhooks": {
            "get": _admin_op(
                "admin_list_webhooks",
                "admin: webhook subscriptions (no secrets), and the delivery figures",
                {
                    "200": _ok(
                        {"type": "array", "items": obj(fields)}, "the subscriptions", obj({"deliveries": figures})
                    )
                },
            ),
            "post": _admin_op(
                "admin_add_webhook",
                "admin: subscribe a URL to the event log's events (docs/API.md, Webhooks)",
                {"201": _ok(obj({**fields, "secret": secret}), "the subscription, with its secret"), **bad, **too_big},
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": obj(
                                {"url": {"type": "string", "description": "http(s); a public address"}},
                                {"types": strings, "accounts": strings, "from_start": BOOL},
                            )
                        }
                    },
                },
            ),
        },
        **switch,
        "/admin/webhooks/{id}/rotate-secret": {
            "post": _admin_op(
                "admin_rotate_webhook_secret",
                "admin: a new signing secret; the old one still signs for overlap_hours (default 24)",
                {
                    "200": _ok(obj({"id": {"type": "integer", "minimum": 1}, "secret": secret}), "the new secret"),
                    **bad,
                    **missing,
                    **too_big,
                },
                parameters=[webhook_id],
                requestBody={
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": obj({}, {"overlap_hours": {"type": "number", "minimum": 0, "maximum": 720}})
                        }
                    },
                },
            )
        },
        "/admin/webhooks/{id}": {
            "delete": _admin_op(
                "admin_remove_webhook",
                "admin: delete a subscription and its deliveries",
                {"200": _ok(obj({"removed": {"type": "integer", "minimum": 1}}), "deleted"), **bad, **missing},
                parameters=[webhook_id],
            )
        },
    }


def build_spec(*, admin: bool = False, read_token: bool = False) -> Schema:
    """The document; `admin`: with the admin routes (served with ADMIN_TOKEN); `read_token`: the
    read routes need a Bearer token (READ_TOKEN set)."""
    paths = {**_paths(), **(_admin_paths() if admin else {})}
    if read_token:
        for path, item in paths.items():
            if path.startswith(READ_PREFIXES):
                for operation in item.values():
                    operation["security"] = [{"read": []}]
                    operation["responses"]["401"] = _error("no or a wrong `Authorization: Bearer <READ_TOKEN>`")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "TRON Stake 2.0 ledger",
            "version": "1",
            "description": "Stake 2.0 operations of an operator's pool accounts, from PostgreSQL through a Redis "
            'cache. Every error has one shape: {"success": false, "error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": _components(),
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    settings = resources().settings
    spec = build_spec(admin=bool(settings.admin_token), read_token=bool(settings.read_token))
    return Response(dumps(spec), mimetype="application/json")
