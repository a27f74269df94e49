"""`ledger`: operator commands (migrate, accounts, recover, procfile, dead-letters, in-flight, rollout, webhooks)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import dramatiq
import psycopg
import redis

from ledger.chain.address import AddressError, to_base58
from ledger.chain.node import NodeUnavailable, node_from_settings
from ledger.chain.snapshot import SnapshotError, opening_gap_start, snapshot_new_accounts, take_snapshot
from ledger.chain.values import ChainDataError, NodeError
from ledger.config import Settings, load_settings
from ledger.coordination.budget import Priority
from ledger.coordination.inflight import held_messages, is_redis_broker
from ledger.coordination.queue import create_broker, is_amqp
from ledger.coordination.recovery import recover_stranded
from ledger.ops import webhooks_cli
from ledger.ops.account_import import Binding, ImportRefused, ImportResult, apply_bindings, read_bindings
from ledger.ops.logs import escape_controls, setup_logging
from ledger.ops.metrics import metrics_client
from ledger.ops.procfile import write_supervisord_conf, write_systemd_units
from ledger.store import deadletters as dl
from ledger.store.accounts import (
    EXTERNAL_ID_FORM,
    ExternalIdError,
    LabelError,
    add_accounts,
    list_accounts,
    parse_external_id,
    parse_label,
    tracked_addresses,
)
from ledger.store.db import ensure_database, migrate
from ledger.store.rollout import read_rollout, split_accounts, write_rollout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ledger", description="TRON Stake 2.0 ledger: operator commands.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create the database if needed and apply pending migrations")
    accounts = sub.add_parser("accounts", help="add or list tracked pool accounts")
    acc_sub = accounts.add_subparsers(dest="action", required=True)
    add = acc_sub.add_parser("add", help="track one or more accounts (base58 T... or hex 41...)")
    add.add_argument("addresses", nargs="+")
    add.add_argument("--label", default=None, help="label of the accounts this adds (an existing one keeps its own)")
    add.add_argument(
        "--external-id",
        default=None,
        help=f"the platform's own id of the account (one address only): {EXTERNAL_ID_FORM}; "
        "an account that has one keeps it unless --replace",
    )
    add.add_argument("--replace", action="store_true", help="with --external-id: change an account's external id")
    _no_snapshot_flag(add)
    imp = acc_sub.add_parser(
        "import",
        help="add accounts and bind their external ids from a CSV file, all or nothing",
        description="Reads a CSV file with the header address,external_id[,label] ('-': standard input). "
        "Every line is checked first, errors name the line and the field; then all of it is written in one "
        "transaction, or nothing is. Running the same file again changes nothing. New accounts get their "
        "opening position from the chain, like `accounts add`. An account that already has another external "
        "id keeps it unless --replace; labels are set on new accounts only. Prints added / updated / unchanged.",
    )
    imp.add_argument("file", help="the CSV file, or - for standard input")
    imp.add_argument(
        "--replace",
        action="store_true",
        help="change the external id of accounts that have another one (also moves an id between two accounts "
        "of the file)",
    )
    _no_snapshot_flag(imp)
    acc_sub.add_parser("list", help="list tracked accounts: id, address, external id, label, added")
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
    _dead_letter_parser(sub)
    sub.add_parser("in-flight", help="messages fetched by each worker and not acked yet (alive or dead workers)")
    rollout = sub.add_parser(
        "rollout",
        help="gray release: the share of accounts the new path answers (the plan's steps: 10, 50, 100)",
        description="The share of pool accounts whose records the new path (PostgreSQL and the cache) answers; "
        "the others are answered the legacy way (TronGrid). Sticky per account: raising the share only adds "
        "accounts. Every web process follows within ROLLOUT_REFRESH_SECONDS.",
    )
    roll_sub = rollout.add_subparsers(dest="action", required=True)
    roll_set = roll_sub.add_parser(
        "set", help="percent of accounts (0-100) the new path answers: 10, then 50, then 100"
    )
    roll_set.add_argument("percent", type=int)
    roll_sub.add_parser("rollback", help="every account back to the legacy TronGrid path (the same as `set 0`)")
    roll_shadow = roll_sub.add_parser("shadow", help="percent (0-100) of new-path answers compared with the legacy one")
    roll_shadow.add_argument("percent", type=int)
    roll_sub.add_parser("show", help="the current setting and how many pool accounts each path serves")
    webhooks_cli.add_parser(sub)
    args = parser.parse_args(argv)

    if args.command == "procfile":
        if args.format == "supervisord":
            print(write_supervisord_conf(args.procfile, args.dir, Path.cwd()))
        else:
            for path in write_systemd_units(args.procfile, args.dir):
                print(path)
        return 0
    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, secrets=(settings.tron_api_key,))
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
    if args.command == "dead-letters":
        return _dead_letters(args, settings)
    if args.command == "in-flight":
        return _in_flight(settings)
    if args.command == "rollout":
        return _rollout(args, settings)
    if args.command == "webhooks":
        return webhooks_cli.run(args, settings)
    with psycopg.connect(settings.database_url) as conn:
        if args.action == "add":
            if args.replace and args.external_id is None:
                print("error: --replace goes with --external-id", file=sys.stderr)
                return 2
            if args.label is not None:
                try:
                    args.label = parse_label(args.label) or None
                except LabelError as exc:
                    print(f"error: --label: {exc}", file=sys.stderr)
                    return 2
            if args.external_id is not None:
                return _add_with_external_id(conn, settings, args)
            try:
                addresses = [to_base58(a) for a in args.addresses]
            except AddressError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if _no_opening_possible(conn, settings, addresses, args.no_snapshot):
                return 2
            added = add_accounts(conn, addresses, args.label)
            for account in added:
                print(f"{account.id}\t{account.address}\t{_cell(account.label)}")
            return _open_positions(conn, settings, [a.address for a in added], args.no_snapshot)
        if args.action == "import":
            return _import(conn, settings, args)
        if args.action == "snapshot":
            return _snapshot(conn, settings, args.addresses)
        for account in list_accounts(conn):
            print(
                f"{account.id}\t{account.address}\t{_cell(account.external_id) or '-'}\t{_cell(account.label)}\t"
                f"{account.added_at:%Y-%m-%d %H:%M:%S}"
            )
        return 0


def _no_snapshot_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-snapshot",
        action="store_true",
        help="do not read new accounts' opening position from the chain (e.g. their history is backfilled with "
        "--since)",
    )


def _no_opening_possible(conn: psycopg.Connection, settings: Settings, addresses: list[str], no_snapshot: bool) -> bool:
    """True (and says what to do) when the command would track new accounts whose opening position
    cannot be read: without a node. Stored without it, an account's summary starts from zero,
    which looks like data and is wrong; `--no-snapshot` is the operator saying its history comes
    from a backfill instead."""
    if no_snapshot or settings.tron_node_url:
        return False
    tracked = tracked_addresses(conn)
    new = [a for a in dict.fromkeys(addresses) if a not in tracked]
    if not new:
        return False
    more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
    print(
        f"error: TRON_NODE_URL is not set, so the opening position of {new[0]}{more} cannot be read from the chain"
        " and its summary would start from zero. Set TRON_NODE_URL (the node the listener reads) and run this"
        " again, or pass --no-snapshot when the account's whole history is backfilled instead"
        " (`python -m listener backfill --since DATE --account T…`); nothing was written",
        file=sys.stderr,
    )
    return True


def _open_positions(conn: psycopg.Connection, settings: Settings, addresses: list[str], no_snapshot: bool) -> int:
    """The opening position of each new account that has none, read from the chain (docs/POSITIONS.md)."""
    if no_snapshot or not addresses:
        return 0
    if not settings.tron_node_url:
        return 0  # nothing new was added (_no_opening_possible refused the others)
    node = node_from_settings(settings, priority=Priority.BACKGROUND)
    try:
        failed = snapshot_new_accounts(conn, node, addresses)
    finally:
        node.close()
    first = opening_gap_start(conn, addresses)
    if first is not None:
        # The running listener did not track these accounts in the blocks since the snapshot.
        flags = " ".join(f"--account {a}" for a in addresses)
        command = f"python -m listener backfill --from-block {first} {flags}"
        print(f"the listener is past the snapshot: run `{command}`", file=sys.stderr)
    return 1 if failed else 0


def _add_with_external_id(conn: psycopg.Connection, settings: Settings, args: argparse.Namespace) -> int:
    if len(args.addresses) != 1:
        print(f"error: --external-id takes one address (got {len(args.addresses)})", file=sys.stderr)
        return 2
    try:
        address = to_base58(args.addresses[0])
        external_id = parse_external_id(args.external_id)
    except (AddressError, ExternalIdError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return _bind(conn, settings, [Binding("", address, external_id, args.label)], args)


def _import(conn: psycopg.Connection, settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.file == "-":
            bindings = read_bindings(sys.stdin)
        else:
            with open(args.file, encoding="utf-8-sig", newline="") as stream:
                bindings = read_bindings(stream)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ImportRefused as exc:
        return _refused(exc)
    return _bind(conn, settings, bindings, args)


def _bind(conn: psycopg.Connection, settings: Settings, bindings: list[Binding], args: argparse.Namespace) -> int:
    if _no_opening_possible(conn, settings, [b.address for b in bindings], args.no_snapshot):
        return 2
    try:
        result = apply_bindings(conn, bindings, replace=args.replace)
    except ImportRefused as exc:
        return _refused(exc)
    _print_result(conn, result)
    return _open_positions(conn, settings, result.added, args.no_snapshot)


_MAX_SHOWN = 50


def _refused(exc: ImportRefused) -> int:
    for problem in exc.problems[:_MAX_SHOWN]:
        print(f"error: {problem}", file=sys.stderr)
    if len(exc.problems) > _MAX_SHOWN:
        print(f"error: … and {len(exc.problems) - _MAX_SHOWN} more", file=sys.stderr)
    print("nothing was written", file=sys.stderr)
    return 2


def _cell(value: str | None) -> str:
    """A stored value as one cell of a tab-separated line on a terminal: control characters
    (newlines, tabs, terminal escapes) written as escapes. Rows stored before labels were checked
    may hold them."""
    return escape_controls(value) if value else ""


def _print_result(conn: psycopg.Connection, result: ImportResult) -> None:
    accounts = {a.address: a for a in list_accounts(conn)}
    for what, addresses in (("added", result.added), ("updated", result.updated)):
        for address in addresses:
            account = accounts[address]
            print(f"{what}\t{account.id}\t{address}\t{_cell(account.external_id)}\t{_cell(account.label)}")
    print(f"{len(result.added)} added, {len(result.updated)} updated, {len(result.unchanged)} unchanged")


def _snapshot(conn: psycopg.Connection, settings: Settings, addresses: list[str]) -> int:
    if not settings.tron_node_url:
        print("error: TRON_NODE_URL is not set", file=sys.stderr)
        return 2
    try:
        normalised = [to_base58(a) for a in addresses]
    except AddressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    node = node_from_settings(settings, priority=Priority.BACKGROUND)
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


def _dead_letter_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dead = sub.add_parser("dead-letters", help="list, show, requeue or purge messages that ended dead")
    actions = dead.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", help="newest first, one line each")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--before-id", type=int, default=None, help="the last id of the previous page")
    ls.add_argument("--actor", default=None, help="only this actor")
    ls.add_argument("--error", default=None, help="error class or message contains this (case-insensitive)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line, arguments included")
    show = actions.add_parser("show", help="one dead letter with its arguments and traceback (JSON)")
    show.add_argument("id", type=int)
    requeue = actions.add_parser("requeue", help="send one again (retries reset); it leaves the list")
    requeue.add_argument("id", type=int)
    requeue_all = actions.add_parser("requeue-all", help="send all again, oldest first (optionally one actor's)")
    requeue_all.add_argument("--actor", default=None)
    purge = actions.add_parser("purge", help="delete for good: one id, one actor's, or --all")
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, dest="purge_id")
    which.add_argument("--actor", dest="purge_actor")
    which.add_argument("--all", action="store_true")


def _dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    broker = create_broker(settings.effective_broker_url)
    broker_redis = metrics_client(settings.redis_url)
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            if is_redis_broker(broker):
                # Dead letters only the broker knows (the worker could not write the row) join the list.
                adopted = dl.adopt_broker_dead_letters(
                    conn, broker_redis, settings.queue_name, secrets=(settings.tron_api_key,)
                )
                if adopted:
                    print(f"recorded {adopted} dead letter(s) found only in the broker", file=sys.stderr)
            return _dead_letter_action(args, conn, broker, broker_redis)
    finally:
        broker.close()
        broker_redis.close()


def _dead_letter_action(
    args: argparse.Namespace, conn: psycopg.Connection, broker: dramatiq.Broker, broker_redis: redis.Redis
) -> int:
    if args.action == "list":
        rows = dl.list_dead_letters(
            conn, limit=args.limit, before_id=args.before_id, actor=args.actor, error=args.error
        )
        for row in rows:
            if args.json:
                row.pop("traceback", None)
                print(json.dumps(row))
            else:
                error = f"{row['error_type']}: {row['error']}".replace("\n", " ")
                print(
                    f"{row['id']}\t{row['failed_at']}\t{row['actor_name']}\t{row['reason']}\t"
                    f"attempts={row['attempts']}\t{error[:160]}"
                )
        if not rows:
            print("no dead letters", file=sys.stderr)
        return 0
    if args.action == "show":
        found = dl.get_dead_letter(conn, args.id)
        if found is None:
            print(f"error: no dead letter {args.id}", file=sys.stderr)
            return 1
        print(json.dumps(found, indent=2))
        return 0
    if args.action == "requeue":
        message_id = dl.requeue_dead_letter(conn, broker, args.id)
        if message_id is None:
            print(f"error: no dead letter {args.id}", file=sys.stderr)
            return 1
        print(f"requeued {args.id} as message {message_id}")
        return 0
    if args.action == "requeue-all":
        sent = dl.requeue_dead_letters(conn, broker, actor=args.actor)
        print(f"requeued {len(sent)} dead letter(s)")
        return 0
    count = dl.purge_dead_letters(conn, broker_redis, dl_id=args.purge_id, actor=args.purge_actor)
    print(f"purged {count} dead letter(s)")
    return 0 if count or not args.purge_id else 1


def _rollout(args: argparse.Namespace, settings: Settings) -> int:
    start = settings.rollout_start_new_percent
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        try:
            if args.action in ("set", "rollback"):
                new = 0 if args.action == "rollback" else args.percent
                current = write_rollout(conn, start_new_percent=start, new=new, by="cli")
            elif args.action == "shadow":
                current = write_rollout(conn, start_new_percent=start, shadow=args.percent, by="cli")
            else:
                current = read_rollout(conn, start)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        on_new, on_legacy = split_accounts(tracked_addresses(conn), current.new_percent)
    origin = "" if current.set_by_operator else "\t(ROLLOUT_START_NEW_PERCENT: not set by an operator)"
    print(f"new {current.new_percent}%\tlegacy {100 - current.new_percent}%\tshadow {current.shadow_percent}%{origin}")
    print(f"pool accounts: {on_new} on the new path, {on_legacy} on the legacy path")
    if on_legacy and not settings.tron_node_url:
        print(
            "note: TRON_NODE_URL is not set here; a web process without it has no legacy path and answers"
            " every account the new way",
            file=sys.stderr,
        )
    if args.action != "show":
        print(f"every web process follows within {settings.rollout_refresh_seconds:g} s", file=sys.stderr)
    return 0


def _in_flight(settings: Settings) -> int:
    client = metrics_client(settings.redis_url)
    try:
        holds = held_messages(
            client, settings.queue_name, heartbeat_timeout_ms=int(settings.worker_heartbeat_timeout * 1000)
        )
    finally:
        client.close()
    for hold in holds:
        if not (hold.alive or hold.messages):
            continue  # producers (listener, web) show up in the broker's heartbeats too
        state = "alive" if hold.alive else "HEARTBEAT STOPPED"
        print(
            f"worker {hold.worker_id}: {state}, last seen {hold.last_seen_ms_ago / 1000:.0f} s ago, "
            f"{len(hold.messages)} message(s) held"
        )
        for m in hold.messages:
            print(f"  {m.queue}\t{m.message_id or '-'}\t{m.actor or '(body gone)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
