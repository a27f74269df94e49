"""A worker of an older release that lacks the persist_operation actor (a rolling deploy's leftover):
`dramatiq tests.old_worker:setup`. Messages for that actor reach it and die as unknown-actor."""

from __future__ import annotations

import dramatiq

from ledger.coordination.queue import PERSIST_OPERATION
from workers import main


def setup() -> None:
    main.setup()
    dramatiq.get_broker().actors.pop(PERSIST_OPERATION)
