"""One logging setup for every process: timestamped lines on stderr, level from LOG_LEVEL."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: at one request per block that drowns what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
