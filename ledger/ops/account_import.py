"""Binding the platform's external ids to pool accounts: `ledger accounts import` (CSV) and
`ledger accounts add T… --external-id 42`.

An import is all or nothing: the whole file is checked first (every problem is reported, each with
its line number and field), then applied in one transaction, which re-checks against the table
under a lock, so two imports at once cannot bind one id twice. Running the same file again changes
nothing (every line `unchanged`).

Changing an account's external id is refused unless `replace` is given: the platform's frontend
names accounts by it, so a change moves what a URL shows. With `replace`, an id may also move
between two accounts of the same file (ids are cleared before they are set, so a swap works). An id
bound to an account the file does not rebind is always refused. Labels are set on new accounts
only: an existing account's label is left as it is (web processes remember accounts' labels).
Web processes see a changed external id within web/directory.py's `EXTERNAL_TTL`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

import psycopg

from ledger.chain.address import AddressError, to_base58
from ledger.store.accounts import ExternalIdError, LabelError, parse_external_id, parse_label

HEADER = ("address", "external_id")
HEADER_WITH_LABEL = ("address", "external_id", "label")


@dataclass(frozen=True, slots=True)
class Binding:
    """One account and the external id it should carry."""

    where: str  # "line 3", or "" for a command-line argument
    address: str  # base58
    external_id: str
    label: str | None = None


@dataclass
class ImportResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


class ImportRefused(Exception):
    """Nothing was written; `problems` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s): " + "; ".join(problems[:3]))
        self.problems = problems


def _problem(where: str, field_name: str, message: str) -> str:
    return f"{where}: {field_name}: {message}" if where else f"{field_name}: {message}"


def _shown(value: str) -> str:
    text = repr(value)
    return text if len(text) <= 70 else text[:70] + "…"


def read_bindings(stream: TextIO) -> list[Binding]:
    """The lines of a CSV file `address,external_id[,label]` (header first); ImportRefused if any is bad."""
    # Read line by line: only the bindings are kept, not the file's rows besides. csv.reader's own
    # line_num would count the lines inside a quoted cell; files of ids have none, and a row number
    # is what a spreadsheet shows.
    reader = enumerate(csv.reader(stream), start=1)
    try:
        first = next(((n, row) for n, row in reader if any(cell.strip() for cell in row)), None)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ImportRefused([f"not a readable CSV file: {exc}"]) from None
    if first is None:
        raise ImportRefused(["the file is empty: expected a header address,external_id[,label]"])
    first_line, header = first
    names = tuple(cell.strip().lstrip("\ufeff").lower() for cell in header)
    if names not in (HEADER, HEADER_WITH_LABEL):
        raise ImportRefused(
            [
                f"line {first_line}: header must be address,external_id or address,external_id,label "
                f"(got {_shown(','.join(header))})"
            ]  # fmt: skip
        )
    problems: list[str] = []
    bindings: list[Binding] = []
    seen_address: dict[str, str] = {}  # -> where it was first
    seen_external: dict[str, str] = {}
    try:
        for line, row in reader:
            if any(cell.strip() for cell in row):
                _read_line(f"line {line}", row, names, problems, bindings, seen_address, seen_external)
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.append(f"not a readable CSV file after line {len(bindings) + 1}: {exc}")
    if problems:
        raise ImportRefused(problems)
    return bindings


def _read_line(
    where: str,
    row: list[str],
    names: tuple[str, ...],
    problems: list[str],
    bindings: list[Binding],
    seen_address: dict[str, str],
    seen_external: dict[str, str],
) -> None:
    if len(row) != len(names) and not (len(names) == 3 and len(row) == 2):
        problems.append(f"{where}: expected {len(names)} fields ({','.join(names)}), got {len(row)}")
        return
    cells = [cell.strip() for cell in row] + [""] * (len(names) - len(row))
    before = len(problems)
    try:
        address = to_base58(cells[0])
    except AddressError as exc:
        problems.append(_problem(where, "address", str(exc)[:200]))
        address = ""
    try:
        external_id = parse_external_id(cells[1])
    except ExternalIdError as exc:
        got = f"got {_shown(cells[1])}" if cells[1] else "the cell is empty"
        problems.append(_problem(where, "external_id", f"{exc} ({got})"))
        external_id = ""
    label = None
    if len(names) == 3 and cells[2]:
        try:
            label = parse_label(cells[2])
        except LabelError as exc:
            problems.append(_problem(where, "label", str(exc)))
    if address:
        if address in seen_address:
            problems.append(_problem(where, "address", f"{address} is also on {seen_address[address]}"))
        else:
            seen_address[address] = where
    if external_id:
        if external_id in seen_external:
            problems.append(
                _problem(where, "external_id", f"{_shown(external_id)} is also on {seen_external[external_id]}")
            )
        else:
            seen_external[external_id] = where
    if len(problems) == before:
        bindings.append(Binding(where, address, external_id, label))


def apply_bindings(conn: psycopg.Connection, bindings: Iterable[Binding], *, replace: bool = False) -> ImportResult:
    """Add or update the accounts in one transaction; ImportRefused (and nothing written) on a conflict.

    `bindings` must not repeat an address or an external id (read_bindings makes sure of it).
    """
    todo = list(bindings)
    result = ImportResult()
    with conn.transaction():
        # Against other imports and `accounts add` (readers are not blocked): what is checked below
        # stays true until the commit.
        conn.execute("LOCK TABLE pool_accounts IN SHARE ROW EXCLUSIVE MODE")
        rows = conn.execute(
            "SELECT id, address, external_id FROM pool_accounts WHERE address = ANY(%s) OR external_id = ANY(%s)",
            ([b.address for b in todo], [b.external_id for b in todo]),
        ).fetchall()
        by_address = {address: (account_id, external) for account_id, address, external in rows}
        holder = {external: (account_id, address) for account_id, address, external in rows if external is not None}
        wanted = {b.address: b.external_id for b in todo}
        problems: list[str] = []
        new: list[Binding] = []
        changed: list[Binding] = []
        for b in todo:
            current = by_address.get(b.address)
            owner = holder.get(b.external_id)
            if owner is not None and owner[1] != b.address and wanted.get(owner[1], b.external_id) == b.external_id:
                # Bound elsewhere, and this file does not give that account another id.
                problems.append(
                    _problem(
                        b.where,
                        "external_id",
                        f"{_shown(b.external_id)} is already bound to account {owner[0]} ({owner[1]})",
                    )
                )
                continue
            if owner is not None and owner[1] != b.address and not replace:
                problems.append(
                    _problem(
                        b.where,
                        "external_id",
                        f"{_shown(b.external_id)} is bound to account {owner[0]} ({owner[1]}); "
                        "pass --replace to move it",
                    )
                )
                continue
            if current is None:
                new.append(b)
            elif current[1] == b.external_id:
                result.unchanged.append(b.address)
            elif current[1] is not None and not replace:
                problems.append(
                    _problem(
                        b.where,
                        "external_id",
                        f"account {current[0]} ({b.address}) already has the external id {_shown(current[1])}; "
                        "pass --replace to change it",
                    )
                )
            else:
                changed.append(b)
        if problems:
            raise ImportRefused(problems)
        with conn.cursor() as cur:
            # Cleared first, so an id can move to another account of the same import (a swap).
            cur.execute(
                "UPDATE pool_accounts SET external_id = NULL WHERE address = ANY(%s)", ([b.address for b in changed],)
            )
            cur.executemany(
                "UPDATE pool_accounts SET external_id = %s WHERE address = %s",
                [(b.external_id, b.address) for b in changed],
            )
            cur.executemany(
                "INSERT INTO pool_accounts (address, label, external_id) VALUES (%s, %s, %s)",
                [(b.address, b.label, b.external_id) for b in new],
            )
    result.updated = [b.address for b in changed]
    result.added = [b.address for b in new]
    return result
