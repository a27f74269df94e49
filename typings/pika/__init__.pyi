# pika 1.3: pika/__init__.py, connection.py, adapters/blocking_connection.py (what the code calls).
from types import TracebackType
from typing import Any

from pika import exceptions as exceptions

class URLParameters:
    def __init__(self, url: str) -> None: ...

class BasicProperties:
    def __init__(self, delivery_mode: int | None = ...) -> None: ...

class _Method:
    message_count: int

class _Frame:
    method: _Method

class BlockingChannel:
    def queue_declare(
        self,
        queue: str,
        passive: bool = ...,
        durable: bool = ...,
        exclusive: bool = ...,
        auto_delete: bool = ...,
        arguments: dict[str, Any] | None = ...,
    ) -> _Frame: ...
    def queue_delete(self, queue: str, if_unused: bool = ..., if_empty: bool = ...) -> object: ...
    def queue_purge(self, queue: str) -> object: ...
    def confirm_delivery(self) -> None: ...
    def basic_publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: BasicProperties | None = ...,
        mandatory: bool = ...,
    ) -> None: ...
    def close(self) -> None: ...

class BlockingConnection:
    def __init__(self, parameters: URLParameters | None = ...) -> None: ...
    def channel(self, channel_number: int | None = ...) -> BlockingChannel: ...
    def close(self) -> None: ...
    def __enter__(self) -> BlockingConnection: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
