"""One logging setup for every process: lines on stderr, level from LOG_LEVEL, format from LOG_FORMAT.

`LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message, and the `block`,
`tx`, `account` and other context a call passes as `extra=`), for a log shipper; the default is a
timestamped text line for a person. The context also ends up in the text line's message where the
call puts it there, so both formats say the same.

What a client or a node sent can reach a log line (a query parameter, an error text). So every
line is bounded and cannot be forged: a string or exception argument longer than
MAX_VALUE_CHARS is cut (saying how long it was), control characters in the text line's message
are escaped (`\r\n` in a value cannot start a line of its own; the JSON format escapes them
anyway), and the secrets given to `setup_logging` (the TronGrid key) are redacted in every
form a node may echo them (`Redactor`), tracebacks included.

A backfill's progress is not a log line but one line an operator watches (`ProgressLine`).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

MAX_VALUE_CHARS = 500
REDACTED = "***"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class Redactor:
    """Replaces secrets in text: as written, JSON-escaped (`\u0053...`, any mix of escaped and
    plain characters) and URL-encoded (`%53...`), in either case of hex digits."""

    def __init__(self, secrets: Iterable[str]) -> None:
        alternatives = [_any_encoding(secret) for secret in sorted(set(secrets), key=len, reverse=True) if secret]
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(REDACTED, text) if self._pattern is not None else text


def _any_encoding(secret: str) -> str:
    parts = []
    for char in secret:
        code = ord(char)
        forms = [re.escape(char), rf"\\u{code:04x}"]
        if code < 0x80:
            forms.append(f"%{code:02x}")
        parts.append("(?:" + "|".join(forms) + ")")
    return "".join(parts)


def escape_controls(text: str) -> str:
    """`text` on one line: control characters written as escapes."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"), text)


def bounded(value: object) -> object:
    """A log argument as it may be written: strings and exceptions cut to MAX_VALUE_CHARS."""
    if not isinstance(value, str | BaseException):
        return value
    text = str(value)
    if len(text) <= MAX_VALUE_CHARS:
        return value
    return f"{text[:MAX_VALUE_CHARS]}… ({len(text):,} characters)"


class _BoundArguments(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, Mapping):
            record.args = {key: bounded(value) for key, value in args.items()}
        elif args:
            record.args = tuple(bounded(value) for value in args)
        if isinstance(record.msg, str) and len(record.msg) > 4 * MAX_VALUE_CHARS:
            record.msg = str(bounded(record.msg))
        return True


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor, fmt: str | None = TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)
        self._redact = redact

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return self._redact(super().format(record))


# Attributes every LogRecord has; anything else on a record came from `extra=` and is context.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redact or Redactor(())

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
        # Before encoding (an escaped form of a secret is escaped again by the encoder) and after.
        redacted = {key: self._redact(value) if isinstance(value, str) else value for key, value in entry.items()}
        return self._redact(orjson.dumps(redacted, default=str).decode())


def configure_handler(handler: logging.Handler, fmt: str, redact: Redactor) -> logging.Handler:
    """`handler` writing this module's lines: bounded arguments, then text or JSON, redacted."""
    handler.addFilter(_BoundArguments())
    handler.setFormatter(JsonFormatter(redact) if fmt.lower() == "json" else TextFormatter(redact))
    return handler


def setup_logging(level: str = "INFO", fmt: str = "text", secrets: Iterable[str] = ()) -> None:
    """`secrets`: values no log line may show (TRON_API_KEY)."""
    redact = Redactor(secrets)
    handler = configure_handler(logging.StreamHandler(), fmt, redact)
    root = logging.getLogger()
    if fmt.lower() == "json":
        # The dramatiq CLI installs its own text handler before our setup runs: replace it.
        for old in list(root.handlers):
            root.removeHandler(old)
    if not root.handlers:
        root.addHandler(handler)
    else:
        # A handler installed before (the dramatiq CLI's) keeps its format, bounded and redacted too.
        for old in root.handlers:
            if old is handler or isinstance(old.formatter, TextFormatter):
                continue
            old.addFilter(_BoundArguments())
            formatter = old.formatter
            old.setFormatter(
                TextFormatter(redact, formatter._fmt, formatter.datefmt) if formatter else TextFormatter(redact)
            )
    root.setLevel(level.upper())
    # httpx logs every request at INFO: at one request per block that drowns what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class ProgressLine:
    """One line on stderr: rewritten in place on a terminal, a new line every few seconds otherwise."""

    def __init__(self, out: TextIO | None = None, every: float = 5.0) -> None:
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.every = 0.25 if self.tty else every
        self._last = float("-inf")
        self._width = 0

    def update(self, text: str, force: bool = False) -> bool:
        """Write the line unless one was written less than `every` seconds ago; True if written."""
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return False
        self._last = now
        if self.tty:
            self.out.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()
        return True

    def finish(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()
