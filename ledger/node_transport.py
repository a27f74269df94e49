"""How the node client sends a request: over urllib3's connection pool by default, or through any
`httpx.BaseTransport` a test or tool passes (e.g. `httpx.MockTransport`).

A catching-up listener makes one TransactionInfo request per block, side by side from a few
threads, and on a small machine the client's own CPU per request decides how fast it goes. The
same 1,200 requests to the simulator from 8 threads cost the client 0.25-0.4 ms of CPU each with
urllib3 and 0.55-0.9 ms with httpx (whose Client layer alone ate the gain of putting urllib3 under
it as its transport). So the default path is urllib3 with nothing on top; both paths hand the node
client the same (status, body) pair and raise the same exceptions.

Certificates are checked against certifi's CA bundle, as httpx does, so the two paths trust the
same roots. Not carried over from httpx's defaults: proxies from the environment (`HTTPS_PROXY`).
"""

from __future__ import annotations

from typing import Protocol

import certifi
import httpx
import urllib3


class TransportTimeout(Exception):
    """The request timed out (connecting or reading)."""


class TransportFailure(Exception):
    """The request failed below HTTP (refused, reset, DNS, TLS...)."""


class Sender(Protocol):
    def send(self, method: str, url: str, body: bytes | None, params: dict[str, str] | None) -> tuple[int, bytes]:
        """(HTTP status, body); TransportTimeout or TransportFailure when there is no answer."""
        ...

    def close(self) -> None: ...


class Urllib3Sender:
    """Keep-alive connections, up to `connections` per host (the listener's fetch threads)."""

    def __init__(self, headers: dict[str, str], timeout: float, connections: int = 16) -> None:
        # No retries or redirects here: the node client decides those (ledger/tron_node.py).
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=connections,
            block=False,
            retries=False,
            headers=headers,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            ca_certs=certifi.where(),
        )

    def send(self, method: str, url: str, body: bytes | None, params: dict[str, str] | None) -> tuple[int, bytes]:
        try:
            reply = self._pool.request(method, url, body=body, fields=params, redirect=False, preload_content=True)
        except urllib3.exceptions.TimeoutError as exc:
            raise TransportTimeout(exc.__class__.__name__) from None
        except urllib3.exceptions.MaxRetryError as exc:  # retries=False still wraps a failed connect
            if isinstance(exc.reason, urllib3.exceptions.TimeoutError):
                raise TransportTimeout(exc.reason.__class__.__name__) from None
            raise TransportFailure(f"{exc.reason.__class__.__name__}: {exc.reason}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise TransportFailure(f"{exc.__class__.__name__}: {exc}") from None
        return reply.status, reply.data

    def close(self) -> None:
        self._pool.clear()


class HttpxSender:
    """Through an httpx transport: the seam tests use to answer anything a node might."""

    def __init__(self, headers: dict[str, str], timeout: float, transport: httpx.BaseTransport) -> None:
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    def send(self, method: str, url: str, body: bytes | None, params: dict[str, str] | None) -> tuple[int, bytes]:
        try:
            response = self._client.request(method, url, content=body, params=params)
        except httpx.TimeoutException as exc:
            raise TransportTimeout(exc.__class__.__name__) from None
        except httpx.HTTPError as exc:
            raise TransportFailure(f"{exc.__class__.__name__}: {exc}") from None
        return response.status_code, response.content

    def close(self) -> None:
        self._client.close()
