"""How long to wait before trying again: one formula for every retry in the product.

Node requests (ledger.chain.node), the listener's cycles and backfills (listener/), the wake-up
feed's reconnects, the adapter's re-asks for a block the node skipped, and the accounting's
re-sends of a missing operation all wait `backoff(attempt, ...)`: a base doubling per failed
attempt up to a cap, spread by a random factor so that many waiters do not come back in step,
and never shorter than a wait the other side announced (a rate limit's "suspended for N s").
The request budget's waiters spread their polls with the same `jittered`.

Not tenacity: most of these are not "call f until it works" but loops that must see a stop
event, log once per burst, publish or checkpoint between tries, or (the accounting) store the
next attempt's due time in PostgreSQL; a delay function fits all of them, a retry decorator one.
"""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 30  # failures in a row past this wait `cap` anyway: no float overflow after hours


def backoff(
    attempt: int, *, base: float, cap: float, jitter: tuple[float, float] = (1.0, 1.0), at_least: float = 0.0
) -> float:
    """Seconds to wait after `attempt` failed tries in a row (1: the first failure): `base` doubled
    per attempt after the first, at most `cap`, times a random factor in `jitter`, and never less
    than `at_least`."""
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    return max(jittered(min(cap, base * 2.0**doublings), jitter), at_least)


def jittered(seconds: float, spread: tuple[float, float]) -> float:
    """`seconds` times a random factor in `spread` (low, high)."""
    low, high = spread
    return seconds * (low if low == high else random.uniform(low, high))


def announced_wait(exc: BaseException) -> float:
    """The seconds an error says to wait (NodeUnavailable.retry_after: a rate limit), else 0."""
    return float(getattr(exc, "retry_after", 0) or 0)
