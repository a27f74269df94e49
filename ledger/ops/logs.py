"""One logging setup for every process: lines on stderr, level from LOG_LEVEL, format from LOG_FORMAT.

`LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message, and the `block`,
`tx`, `account` and other context a call passes as `extra=`), for a log shipper; the default is a
timestamped text line for a person. The context also ends up in the text line's message where the
call puts it there, so both formats say the same.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=` and is context.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    if fmt.lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    if fmt.lower() == "json":
        # The dramatiq CLI installs its own text handler before our setup runs: replace it.
        for old in list(root.handlers):
            root.removeHandler(old)
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO: at one request per block that drowns what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
