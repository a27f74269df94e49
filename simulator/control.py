"""The /sim/* control endpoints for tests and benchmarks (not part of java-tron).

GET  /sim/status                -> {"head","solid","paused","accounts","block_interval",...}
POST /sim/pause, /sim/resume    -> {"paused": bool}
POST /sim/produce {"count": N}  -> produce N blocks now, even when paused -> {"produced","head","solid"}
GET  /sim/truth[?account=T...]  -> {"head","solid","operations":[...]} (see simulator.truth)

Errors here are plain HTTP 4xx with {"error": "..."}: this is our API, not java-tron's.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .addresses import base58_to_hex
from .httpio import Request, Response, json_response
from .node import SimNode

MAX_PRODUCE = 100_000


class ControlApi:
    def __init__(self, node: SimNode) -> None:
        self._node = node
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "status"): self._status,
            ("POST", "pause"): self._pause,
            ("POST", "resume"): self._resume,
            ("POST", "produce"): self._produce,
            ("GET", "truth"): self._truth,
        }

    def handle(self, request: Request) -> Response | None:
        prefix, _, name = request.path.strip("/").partition("/")
        if prefix != "sim":
            return None
        route = self._routes.get((request.method, name))
        if route is None:
            if any(known == name for _, known in self._routes):
                return json_response({"error": f"{request.method} not allowed on /sim/{name}"}, 405)
            return json_response({"error": f"unknown control endpoint /sim/{name}"}, 404)
        try:
            return route(request)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)

    def _status(self, request: Request) -> Response:
        return json_response(self._node.status())

    def _pause(self, request: Request) -> Response:
        self._node.pause()
        return json_response({"paused": True})

    def _resume(self, request: Request) -> Response:
        self._node.resume()
        return json_response({"paused": False})

    def _produce(self, request: Request) -> Response:
        body = json.loads(request.body) if request.body.strip() else {}
        count = body.get("count", 1) if isinstance(body, dict) else None
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_PRODUCE:
            raise ValueError(f"count must be an integer in 1..{MAX_PRODUCE}")
        self._node.produce(count)
        status = self._node.status()
        return json_response({"produced": count, "head": status["head"], "solid": status["solid"]})

    def _truth(self, request: Request) -> Response:
        account = request.query.get("account", "").strip()
        if not account:
            return json_response(self._node.truth())
        # Base58 is the documented form; the hex form is accepted for convenience.
        hex_address = account.lower() if len(account) == 42 else base58_to_hex(account)
        return json_response(self._node.truth([hex_address]))
