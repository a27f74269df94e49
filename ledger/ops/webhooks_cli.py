"""`ledger webhooks add|list|disable|enable|remove|rotate-secret`: webhook subscriptions (ledger/store/webhooks.py)."""

from __future__ import annotations

import argparse
import sys

import psycopg

from ledger.config import Settings
from ledger.store import webhooks
from ledger.store.events import EVENT_TYPES


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("webhooks", help="signed webhook subscriptions to the event log (docs/API.md)")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add",
        help="subscribe a URL; prints the id and the signing secret (shown only here)",
        description="Events written from now on that match are POSTed to URL, signed (Ledger-Signature). "
        "Event types: " + ", ".join(EVENT_TYPES) + ".",
    )
    add.add_argument("url")
    add.add_argument("--types", default="", help="comma-separated event types (default: all)")
    add.add_argument("--accounts", default="", help="comma-separated base58 pool accounts (default: all)")
    add.add_argument("--from-start", action="store_true", help="also deliver the events already in the log")
    actions.add_parser("list", help="id, state, URL, types, accounts, last event handed over")
    for name, text in (
        ("disable", "stop delivering (deliveries wait, and go out when enabled again)"),
        ("enable", "deliver again, the waiting deliveries first"),
        ("remove", "delete the subscription and its deliveries"),
    ):
        actions.add_parser(name, help=text).add_argument("id", type=int)
    rotate = actions.add_parser(
        "rotate-secret", help="a new secret (printed); the old one still signs for --overlap-hours"
    )
    rotate.add_argument("id", type=int)
    rotate.add_argument("--overlap-hours", type=float, default=24.0)


def run(args: argparse.Namespace, settings: Settings) -> int:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        if args.action == "add":
            try:
                sub, secret = webhooks.add_subscription(
                    conn,
                    args.url,
                    types=args.types.split(","),
                    accounts=args.accounts.split(","),
                    allow_private=settings.webhook_allow_private,
                    from_start=args.from_start,
                )
            except webhooks.WebhookError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            print(f"{sub.id}\t{secret}")
            print("keep the secret: it is not shown again (rotate-secret makes a new one)", file=sys.stderr)
            return 0
        if args.action == "list":
            for s in webhooks.list_subscriptions(conn):
                state = "enabled" if s.enabled else "disabled"
                print(
                    f"{s.id}\t{state}\t{s.url}\t{','.join(s.types) or '*'}\t{','.join(s.accounts) or '*'}\t"
                    f"{s.after_seq}{chr(9) + 'rotating' if s.rotating else ''}"
                )
            return 0
        if args.action == "rotate-secret":
            rotated = webhooks.rotate_secret(conn, args.id, args.overlap_hours * 3600)
            if rotated is None:
                return _missing(args.id)
            print(rotated)
            return 0
        if args.action == "remove":
            return 0 if webhooks.remove_subscription(conn, args.id) else _missing(args.id)
        if webhooks.set_enabled(conn, args.id, args.action == "enable") is None:
            return _missing(args.id)
        return 0


def _missing(sub_id: int) -> int:
    print(f"error: no webhook subscription {sub_id}", file=sys.stderr)
    return 1
