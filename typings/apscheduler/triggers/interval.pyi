# APScheduler 3.11: apscheduler/triggers/interval.py.
from datetime import datetime, tzinfo

class IntervalTrigger:
    def __init__(
        self,
        weeks: int = ...,
        days: int = ...,
        hours: int = ...,
        minutes: int = ...,
        seconds: int | float = ...,
        start_date: datetime | str | None = ...,
        end_date: datetime | str | None = ...,
        timezone: tzinfo | str | None = ...,
        jitter: int | None = ...,
    ) -> None: ...
