"""Query-string parameters: parsed strictly, with 400 messages that say what is allowed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ledger.store.accounts import EXTERNAL_ID_FORM, AccountKeyError, ExternalIdError, PoolAccount, parse_external_id
from web.directory import AccountDirectory
from web.responses import bad_request, not_found, shown

MAX_LIMIT = 100
DEFAULT_LIMIT = 20
# Numbered pages use OFFSET, whose cost grows with depth; past this many rows, cursors only.
MAX_OFFSET_ROWS = 10_000

ACCOUNT_FORMS = "an account id (e.g. 1) or a TRON address (base58 T... or hex 41...)"
EXTERNAL_FORMS = f"the platform's external id of a pool account: {EXTERNAL_ID_FORM}"


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


@dataclass(frozen=True)
class AccountRef:
    account: PoolAccount
    external_id: str | None  # the platform's id the request named the account by, if it did


def account_from_args(
    directory: AccountDirectory, args: Mapping[str, str], *, compat: bool = False
) -> AccountRef | None:
    """The account a query string names; None when it names none.

    `pool_account_id` is this ledger's id or the address, or, on the compatibility routes
    (`compat`), the platform's external id, which is what an existing frontend sends there.
    `external_id` is the platform's id on every route. Both at once is a 400: if they disagreed,
    neither answer would be right.
    """
    key = args.get("pool_account_id")
    external = args.get("external_id")
    if key is not None and external is not None:
        raise bad_request("give either pool_account_id or external_id, not both")
    if compat and key is not None:
        return resolve_external(directory, key, "pool_account_id")
    if external is not None:
        return resolve_external(directory, external, "external_id")
    if key is None:
        return None
    return AccountRef(resolve_account(directory, key, "pool_account_id"), None)


def require_account(directory: AccountDirectory, args: Mapping[str, str], *, compat: bool = False) -> AccountRef:
    ref = account_from_args(directory, args, compat=compat)
    if ref is None:
        forms = EXTERNAL_FORMS if compat else f"{ACCOUNT_FORMS}; or external_id, {EXTERNAL_FORMS}"
        raise bad_request(f"pool_account_id is required: {forms}")
    return ref


def resolve_external(directory: AccountDirectory, text: str, name: str) -> AccountRef:
    """The account bound to the external id `text`: 400 if missing or malformed, 404 if none is."""
    if not text.strip():
        raise bad_request(f"{name} is required: {EXTERNAL_FORMS}")
    try:
        external_id = parse_external_id(text)
    except ExternalIdError:
        raise bad_request(f"{name} must be {EXTERNAL_FORMS} (got {shown(text)})") from None
    account = directory.resolve_external(external_id)
    if account is None:
        raise not_found(f"no pool account has the external id {shown(external_id)}")
    return AccountRef(account, external_id)
