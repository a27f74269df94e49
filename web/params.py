"""Query-string parameters: parsed strictly, with 400 messages that say what is allowed."""

from __future__ import annotations

from collections.abc import Mapping

from ledger.accounts import AccountKeyError, PoolAccount
from web.directory import AccountDirectory
from web.responses import bad_request, not_found, shown

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
# Numbered pages use OFFSET, whose cost grows with depth; past this many rows, cursors only.
MAX_OFFSET_ROWS = 10_000

ACCOUNT_FORMS = "an account id (e.g. 1) or a TRON address (base58 T... or hex 41...)"


def int_param(args: Mapping[str, str], name: str, default: int, low: int, high: int | None = None) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    allowed = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
    text = raw.strip()
    if not (text.isdigit() and text.isascii() and len(text) <= 18):
        raise bad_request(f"{name} must be {allowed} (got {shown(raw)})")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise bad_request(f"{name} must be {allowed} (got {shown(raw)})")
    return value


def parse_limit(args: Mapping[str, str]) -> int:
    return int_param(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)


def parse_page(args: Mapping[str, str], limit: int) -> int:
    page = int_param(args, "page", 1, 1)
    if page * limit > MAX_OFFSET_ROWS:
        raise bad_request(
            f"page * limit must be at most {MAX_OFFSET_ROWS} (got page={page}, limit={limit}); "
            "to read deeper, follow meta.next_cursor with the cursor parameter"
        )
    return page


def resolve_account(directory: AccountDirectory, key: str | None, name: str) -> PoolAccount:
    """The pool account for `key`: 400 if missing or malformed, 404 if not tracked."""
    if key is None or not key.strip():
        raise bad_request(f"{name} is required: {ACCOUNT_FORMS}")
    try:
        account = directory.resolve(key)
    except AccountKeyError:
        # The reason (checksum, length, range) is not given: its text would repeat the whole input.
        raise bad_request(f"{name} must be {ACCOUNT_FORMS} (got {shown(key)})") from None
    if account is None:
        raise not_found(f"no pool account {shown(key.strip())} is tracked by this ledger")
    return account
