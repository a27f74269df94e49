"""`python -m ledger`: operator commands (migrate, accounts, recover, procfile)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import psycopg
import redis

from ledger.accounts import add_accounts, list_accounts
from ledger.address import AddressError, to_base58
from ledger.config import Settings, load_settings
from ledger.db import ensure_database, migrate
from ledger.logs import setup_logging
from ledger.procfile import write_supervisord_conf, write_systemd_units
from ledger.queue import is_amqp
from ledger.recovery import recover_stranded
from ledger.snapshot import SnapshotError, opening_gap_start, snapshot_new_accounts, take_snapshot
from ledger.tron_json import ChainDataError, NodeError
from ledger.tron_node import NodeUnavailable, node_from_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ledger", description="TRON Stake 2.0 ledger: operator commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if needed and apply pending migrations")
    accounts = sub.add_parser("accounts", help="add or list tracked pool accounts")
    acc_sub = accounts.add_subparsers(dest="action", required=True)
    add = acc_sub.add_parser("add", help="track one or more accounts (base58 T... or hex 41...)")
    add.add_argument("addresses", nargs="+")
    add.add_argument("--label", default=None)
    add.add_argument(
        "--no-snapshot",
        action="store_true",
        help="do not read the opening position from the chain (e.g. its history is backfilled with --since)",
    )
    acc_sub.add_parser("list", help="list tracked accounts")
    recover = sub.add_parser(
        "recover", help="put back in their queues the messages held by dead workers (the workers do it every second)"
    )
    recover.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds without a heartbeat after which a worker is dead (default: WORKER_HEARTBEAT_TIMEOUT)",
    )
    procfile = sub.add_parser(
        "procfile", help="write a supervisord config (the run command) or systemd units (production) from a Procfile"
    )
    procfile.add_argument("format", choices=("supervisord", "systemd"))
    procfile.add_argument("procfile", type=Path, nargs="?", default=Path("Procfile"))
    procfile.add_argument("--dir", type=Path, required=True, help="where to write the file(s)")
    snap = acc_sub.add_parser(
        "snapshot", help="read accounts' positions from the chain (TRON_NODE_URL) as their opening state, now"
    )
    snap.add_argument("addresses", nargs="+")
    args = parser.parse_args(argv)

    if args.command == "procfile":
        if args.format == "supervisord":
            print(write_supervisord_conf(args.procfile, args.dir, Path.cwd()))
        else:
            for path in write_systemd_units(args.procfile, args.dir):
                print(path)
        return 0
    settings = load_settings()
    setup_logging(settings.log_level)
    if args.command == "recover":
        if is_amqp(settings.effective_broker_url):
            print("RabbitMQ gives a dead consumer's messages back itself when its connection closes; nothing to do")
            return 0
        client = redis.Redis.from_url(settings.effective_broker_url)
        try:
            found = recover_stranded(client, timeout=args.timeout or settings.worker_heartbeat_timeout)
        finally:
            client.close()
        print(f"{found.dead_workers} dead worker(s), {found.messages} message(s) put back")
        for queue, count in sorted(found.by_queue.items()):
            print(f"{queue}\t{count}")
        return 0
    if args.command == "migrate":
        ensure_database(settings.database_url)
        applied = migrate(settings.database_url)
        print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
        return 0
    with psycopg.connect(settings.database_url) as conn:
        if args.action == "add":
            try:
                added = add_accounts(conn, args.addresses, args.label)
            except AddressError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            for account in added:
                print(f"{account.id}\t{account.address}\t{account.label or ''}")
            if args.no_snapshot:
                return 0
            if not settings.tron_node_url:
                print("warning: TRON_NODE_URL is not set: no opening position taken", file=sys.stderr)
                return 0
            node = node_from_settings(settings)
            try:
                failed = snapshot_new_accounts(conn, node, [a.address for a in added])
            finally:
                node.close()
            first = opening_gap_start(conn, [a.address for a in added])
            if first is not None:
                # The running listener did not track these accounts in the blocks since the snapshot.
                flags = " ".join(f"--account {a.address}" for a in added)
                command = f"python -m listener backfill --from-block {first} {flags}"
                print(f"the listener is past the snapshot: run `{command}`", file=sys.stderr)
            return 1 if failed else 0
        if args.action == "snapshot":
            return _snapshot(conn, settings, args.addresses)
        for account in list_accounts(conn):
            print(f"{account.id}\t{account.address}\t{account.label or ''}\t{account.added_at:%Y-%m-%d %H:%M:%S}")
        return 0


def _snapshot(conn: psycopg.Connection, settings: Settings, addresses: list[str]) -> int:
    if not settings.tron_node_url:
        print("error: TRON_NODE_URL is not set", file=sys.stderr)
        return 2
    try:
        normalised = [to_base58(a) for a in addresses]
    except AddressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    node = node_from_settings(settings)
    status = 0
    try:
        for address in normalised:
            try:
                pos = take_snapshot(conn, node, address)
            except (SnapshotError, NodeUnavailable, NodeError, ChainDataError) as exc:
                print(f"error: {address}: {exc}", file=sys.stderr)
                status = 1
                continue
            staked = ", ".join(f"{res} {amount}" for res, amount in pos.staked.items() if amount)
            print(f"{address}\tblock {pos.block_num}\tstaked: {staked or '0'}\treceivers: {len(pos.pairs)}")
    finally:
        node.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
