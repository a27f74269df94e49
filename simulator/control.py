"""The /sim/* control endpoints for tests and benchmarks (not part of java-tron).

GET  /sim/status                -> {"head","solid","paused","accounts","block_interval",...}
POST /sim/pause, /sim/resume    -> {"paused": bool}
POST /sim/produce {"count": N}  -> produce N blocks now, even when paused -> {"produced","head","solid"}
GET  /sim/truth[?account=T...]  -> {"head","solid","operations":[...]} (see simulator.truth);
                                   rows a fork removed for good have "status": "orphaned"
GET  /sim/faults                -> settings, suspension state and injected-fault counts by kind
POST /sim/faults {"rate","kinds","suspend_seconds","timeout_seconds","suspended","reset_counts"}
                                -> change any of them (see simulator.faults); answers as GET
GET  /sim/fork                  -> {"rate","max_depth","forks","possible_depth"}
POST /sim/fork {"depth": d}     -> reorganise now, even when paused -> {"depth","replaced","head",...}
POST /sim/fork {"rate","max_depth"} -> change the random fork settings (no fork unless "depth")
GET  /sim/ws                    -> {"clients","drop_every","connections","messages_sent","dropped"}
POST /sim/ws {"drop_every": s}  -> close every /ws connection every s seconds (0 = never)
POST /sim/ws/drop               -> close every /ws connection now -> {"dropped": n}

Errors here are plain HTTP 4xx with {"error": "..."}: this is our API, not java-tron's.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .addresses import base58_to_hex
from .faults import FaultInjector
from .feed import BlockFeed
from .httpio import Request, Response, json_response
from .node import SimNode

MAX_PRODUCE = 100_000


class ControlApi:
    def __init__(self, node: SimNode, faults: FaultInjector | None = None, feed: BlockFeed | None = None) -> None:
        self._node = node
        self._faults = faults
        self._feed = feed
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "status"): self._status,
            ("POST", "pause"): self._pause,
            ("POST", "resume"): self._resume,
            ("POST", "produce"): self._produce,
            ("GET", "truth"): self._truth,
            ("GET", "fork"): self._fork_view,
            ("POST", "fork"): self._fork,
        }
        if faults is not None:
            self._routes[("GET", "faults")] = lambda request: json_response(faults.view())
            self._routes[("POST", "faults")] = lambda request: json_response(faults.update(**_body(request)))
        if feed is not None:
            self._routes[("GET", "ws")] = lambda request: json_response(feed.view())
            self._routes[("POST", "ws")] = self._ws
            self._routes[("POST", "ws/drop")] = lambda request: json_response({"dropped": feed.drop_all()})

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
        count = _body(request).get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_PRODUCE:
            raise ValueError(f"count must be an integer in 1..{MAX_PRODUCE}")
        self._node.produce(count)
        status = self._node.status()
        return json_response({"produced": count, "head": status["head"], "solid": status["solid"]})

    def _fork_view(self, request: Request) -> Response:
        return json_response(self._node.fork_settings())

    def _fork(self, request: Request) -> Response:
        body = _body(request)
        unknown = set(body) - {"depth", "rate", "max_depth"}
        if unknown:
            raise ValueError(f"unknown fork setting(s) {sorted(unknown)}")
        rate, max_depth, depth = body.get("rate"), body.get("max_depth"), body.get("depth")
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ValueError("rate must be a number in 0..1")
            self._node.fork_rate = float(rate)
        if max_depth is not None:
            if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
                raise ValueError("max_depth must be an integer >= 1")
            self._node.fork_max_depth = max_depth
        if depth is None:
            return json_response(self._node.fork_settings())
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise ValueError("depth must be an integer")
        result = self._node.fork(depth)
        return json_response({**result, "forks": self._node.forks})

    def _ws(self, request: Request) -> Response:
        assert self._feed is not None  # the route exists only with a feed
        every = _body(request).get("drop_every")
        if isinstance(every, bool) or not isinstance(every, (int, float)):
            raise ValueError("drop_every must be a number of seconds (0 = never)")
        self._feed.set_drop_every(float(every))
        return json_response(self._feed.view())

    def _truth(self, request: Request) -> Response:
        account = request.query.get("account", "").strip()
        if not account:
            return json_response(self._node.truth())
        # Base58 is the documented form; the hex form is accepted for convenience.
        hex_address = account.lower() if len(account) == 42 else base58_to_hex(account)
        return json_response(self._node.truth([hex_address]))


def _body(request: Request) -> dict[str, object]:
    """The JSON object body ({} when empty); ValueError (-> 400) for anything else."""
    if not request.body.strip():
        return {}
    body = json.loads(request.body)  # json.JSONDecodeError is a ValueError
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body
