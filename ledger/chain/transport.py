"""How the node client sends a request: over urllib3's connection pool by default, or through any
`httpx.BaseTransport` a test or tool passes (e.g. `httpx.MockTransport`).

A catching-up listener makes one TransactionInfo request per block, side by side from a few
threads, and on a small machine the client's own CPU per request decides how fast it goes. The
same 1,200 requests to the simulator from 8 threads cost the client 0.25-0.4 ms of CPU each with
urllib3 and 0.55-0.9 ms with httpx (whose Client layer alone ate the gain of putting urllib3 under
it as its transport). So the default path is urllib3 with nothing on top; both paths hand the node
client the same (status, body) pair and raise the same exceptions.

Certificates are checked against certifi's CA bundle, as httpx does, so the two paths trust the
same roots.

Proxies come from the environment, as httpx and Python's urllib take them: `HTTPS_PROXY` for an
https:// node URL, `HTTP_PROXY` for an http:// one, `ALL_PROXY` for either when that one is unset
(lower-case names win over upper-case ones), and `NO_PROXY` (comma-separated host suffixes, with or
without a port, or `*`) for the hosts reached directly, e.g. a self-run node next to TronGrid behind a
proxy. The choice is made once per base URL (the node URL and the solidity URL may differ) when the
client is built, and logged once without any credentials. An https:// node is reached through a
CONNECT tunnel, so the proxy sees neither the API key nor the replies; user:password in the proxy
URL is sent as Proxy-Authorization. Only http:// and https:// proxies (no SOCKS).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]

import certifi
import httpx
import urllib3

log = logging.getLogger(__name__)

Proxies = Mapping[str, str]
"""Scheme ("https", "http", "all") -> proxy URL, and "no" -> the NO_PROXY list: what
`urllib.request.getproxies_environment()` reads from `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`."""


class TransportTimeout(Exception):
    """The request timed out (connecting or reading)."""


class TransportFailure(Exception):
    """The request failed below HTTP (refused, reset, DNS, TLS...)."""


class Sender(Protocol):
    def send(
        self, method: str, base: str, path: str, body: bytes | None, params: dict[str, str] | None
    ) -> tuple[int, bytes]:
        """(HTTP status, body) of `base + path`; TransportTimeout or TransportFailure when there is
        no answer."""
        ...

    def close(self) -> None: ...


class Urllib3Sender:
    """Keep-alive connections, up to `connections` per host (the listener's fetch threads), to each
    of `bases` directly or through the proxy `proxies` names for it (default: the environment's)."""

    def __init__(
        self,
        headers: dict[str, str],
        timeout: float,
        bases: Iterable[str],
        proxies: Proxies | None = None,
        connections: int = 16,
    ) -> None:
        # The environment only, as httpx reads it: getproxies() would add macOS's or Windows's
        # system settings, whose exceptions proxy_bypass_environment does not know.
        proxies = getproxies_environment() if proxies is None else proxies
        # No retries or redirects here: the node client decides those (ledger/chain/node.py).
        pool_kw: dict[str, Any] = {
            "num_pools": 4,
            "maxsize": connections,
            "block": False,
            "retries": False,
            "headers": headers,
            "timeout": urllib3.Timeout(connect=timeout, read=timeout),
            "ca_certs": certifi.where(),
        }
        managers: dict[str | None, urllib3.PoolManager] = {}
        self._routes: dict[str, urllib3.PoolManager] = {}
        shown = []
        for base in dict.fromkeys(bases):
            proxy = proxy_for(base, proxies)
            if proxy not in managers:
                managers[proxy] = urllib3.PoolManager(**pool_kw) if proxy is None else _through(proxy, pool_kw)
            self._routes[base] = managers[proxy]
            shown.append(f"{_origin(base)} " + (f"through proxy {_origin(proxy)}" if proxy else "direct"))
        self._managers = list(managers.values())
        log.info("node requests: %s", "; ".join(shown))

    def send(
        self, method: str, base: str, path: str, body: bytes | None, params: dict[str, str] | None
    ) -> tuple[int, bytes]:
        pool = self._routes[base]
        try:
            reply = pool.request(method, base + path, body=body, fields=params, redirect=False, preload_content=True)
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
        for manager in self._managers:
            manager.clear()


class HttpxSender:
    """Through an httpx transport: the seam tests use to answer anything a node might."""

    def __init__(self, headers: dict[str, str], timeout: float, transport: httpx.BaseTransport) -> None:
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    def send(
        self, method: str, base: str, path: str, body: bytes | None, params: dict[str, str] | None
    ) -> tuple[int, bytes]:
        try:
            response = self._client.request(method, base + path, content=body, params=params)
        except httpx.TimeoutException as exc:
            raise TransportTimeout(exc.__class__.__name__) from None
        except httpx.HTTPError as exc:
            raise TransportFailure(f"{exc.__class__.__name__}: {exc}") from None
        return response.status_code, response.content

    def close(self) -> None:
        self._client.close()


def proxy_for(url: str, proxies: Proxies) -> str | None:
    """The proxy a request to `url` goes through, None for a direct connection: the entry for its
    scheme, else `all`, unless `no` names its host (urllib's rules, proxy_bypass_environment)."""
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass_environment(parts.netloc.rpartition("@")[2], proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"  # `host:3128` is an http proxy, to httpx as to requests


def _through(proxy: str, pool_kw: dict[str, Any]) -> urllib3.ProxyManager:
    """Plain-HTTP requests go to the proxy as absolute URIs, HTTPS ones through a CONNECT tunnel."""
    parts = urlsplit(proxy)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"proxy {_origin(proxy)}: only http:// and https:// proxies are supported")
    auth: dict[str, str] = {}
    if parts.username is not None:
        # urllib3 takes no credentials from the URL: they go as a header, and nowhere else.
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = urllib3.util.make_headers(proxy_basic_auth=credentials)
    return urllib3.ProxyManager(_origin(proxy), proxy_headers=auth, **pool_kw)


def _origin(url: str) -> str:
    """scheme://host[:port] alone: a user:password or a path (some providers put a token there)
    must not reach a log line."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
