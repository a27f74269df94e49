# APScheduler 3.11: apscheduler/schedulers/base.py (BaseScheduler) and background.py.
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, tzinfo
from typing import Any

from apscheduler.triggers.interval import IntervalTrigger

class BackgroundScheduler:
    def __init__(self, *, timezone: tzinfo | str | None = ..., daemon: bool = ...) -> None: ...
    def add_job(
        self,
        func: Callable[..., object],
        trigger: IntervalTrigger | str | None = ...,
        args: Iterable[Any] | None = ...,
        kwargs: Mapping[str, Any] | None = ...,
        id: str | None = ...,  # noqa: A002 - the library's keyword
        name: str | None = ...,
        misfire_grace_time: int | None = ...,
        coalesce: bool = ...,
        max_instances: int = ...,
        next_run_time: datetime | None = ...,
        jobstore: str = ...,
        executor: str = ...,
        replace_existing: bool = ...,
    ) -> object: ...
    def start(self, paused: bool = ...) -> None: ...
    def shutdown(self, wait: bool = ...) -> None: ...
