"""Read load for the soak: request paths with accounts drawn by Zipf rank (a few accounts take most
reads, as an operator's busiest pools do), and the accounts a freshness watcher follows."""

from __future__ import annotations

import random

# The share of each route in the read mix.
ROUTES = (
    (0.5, "/api/stake/records?pool_account_id={a}&limit=20"),
    (0.3, "/api/delegate/records?pool_account_id={a}&limit=20"),
    (0.2, "/api/accounts/{a}/summary"),
)


def zipf_paths(accounts: tuple[str, ...], count: int, exponent: float, seed: int) -> list[str]:
    """`count` request paths: an account by Zipf rank, then a route by the ROUTES mix."""
    rng = random.Random(seed)
    weights = [1 / (rank**exponent) for rank in range(1, len(accounts) + 1)]
    owners = rng.choices(accounts, weights=weights, k=count)
    templates = rng.choices([t for _, t in ROUTES], weights=[w for w, _ in ROUTES], k=count)
    return [t.format(a=a) for t, a in zip(templates, owners, strict=True)]


def watched(accounts: tuple[str, ...], count: int) -> list[str]:
    """Half the busiest accounts (the Zipf order), half spread over the rest."""
    busy = list(accounts[: count // 2])
    rest = accounts[count // 2 :]
    step = max(1, len(rest) // max(1, count - len(busy)))
    return busy + list(rest[::step][: count - len(busy)])
