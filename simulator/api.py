"""The java-tron HTTP endpoints: /wallet/* (up to head) and /walletsolidity/* (up to solid head).

Parameter handling mirrors java-tron's servlets: GET reads the query string; POST reads the
JSON body only (a query string on a POST is ignored, as the servlets' getPostParams does),
except getnowblock, whose POST body java-tron never parses (visible must be in the query).
Errors are HTTP 200 with {"Error": "..."}; "not found" is {} (or [] for transaction infos).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from .chain import ChainStore
from .httpio import Request, Response, json_response, raw_json
from .model import Block, Tx
from .render import Renderer

MAX_LIMIT_NEXT = 100  # getblockbylimitnext: 0 < endNum - startNum <= 100
_HASH = re.compile(r"^[0-9a-fA-F]{64}$")
_INTEGER = re.compile(r"^-?\d+$")

Handler = Callable[[dict[str, Any], bool, int | None], Response]


class NodeError(Exception):
    """Rendered as java-tron does: HTTP 200, {"Error": "<exception class> : <message>"}."""

    def __init__(self, message: str, exception_class: str = "java.lang.IllegalArgumentException") -> None:
        super().__init__(message)
        self.text = f"class {exception_class} : {message}" if exception_class else message


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


def _int_param(params: dict[str, Any], name: str) -> int:
    value = params.get(name)
    if value is None:
        raise NodeError(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise NodeError(f'For input string: "{value}"', "java.lang.NumberFormatException")
    if isinstance(value, str):
        if not _INTEGER.match(value.strip()):
            raise NodeError(f'For input string: "{value}"', "java.lang.NumberFormatException")
        return int(value.strip())
    return value


def request_params(request: Request, name: str) -> tuple[dict[str, Any], bool]:
    """(parameters, visible) as java-tron's servlets read them: the query string for GET, the
    JSON body only for POST (getnowblock's POST body is never parsed)."""
    if request.method == "GET":
        return dict(request.query), _truthy(request.query.get("visible"))
    if name == "getnowblock":
        return {}, _truthy(request.query.get("visible"))
    text = request.body.decode("utf-8", "replace").strip()
    if not text:
        return {}, False
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise NodeError(str(exc), "com.alibaba.fastjson.JSONException") from None
    if not isinstance(params, dict):
        raise NodeError("JSON body must be an object", "com.alibaba.fastjson.JSONException")
    return params, _truthy(params.get("visible"))


class NodeApi:
    def __init__(self, store: ChainStore, renderer: Renderer) -> None:
        self._store = store
        self._render = renderer
        self._routes: dict[str, Handler] = {
            "getnowblock": self._now_block,
            "getblockbynum": self._block_by_num,
            "getblock": self._block,
            "getblockbylimitnext": self._block_by_limit_next,
            "gettransactioninfobyblocknum": self._infos_by_block_num,
            "gettransactionbyid": self._tx_by_id,
            "gettransactioninfobyid": self._info_by_id,
        }

    def handle(self, request: Request) -> Response | None:
        """The response, or None when the path is not a node endpoint."""
        prefix, _, name = request.path.strip("/").partition("/")
        if prefix not in ("wallet", "walletsolidity") or name not in self._routes:
            return None
        if request.method not in ("GET", "POST"):
            return Response(405, b"Method Not Allowed", "text/plain")
        heights = self._store.heights()
        limit = heights.head if prefix == "wallet" else heights.solid
        try:
            params, visible = self._params(request, name)
            return self._routes[name](params, visible, limit)
        except NodeError as exc:
            return json_response({"Error": exc.text})

    @staticmethod
    def _params(request: Request, name: str) -> tuple[dict[str, Any], bool]:
        return request_params(request, name)

    # -- blocks --------------------------------------------------------------------------------

    def _block_reply(self, number: int | None, visible: bool, limit: int | None, detail: bool = True) -> Response:
        block = None if number is None or limit is None else self._store.block(number, limit)
        if block is None:
            return raw_json(b"{}")
        return raw_json(self._render.block_bytes(block, visible, detail))

    def _now_block(self, params: dict[str, Any], visible: bool, limit: int | None) -> Response:
        return self._block_reply(limit, visible, limit)

    def _block_by_num(self, params: dict[str, Any], visible: bool, limit: int | None) -> Response:
        return self._block_reply(_int_param(params, "num"), visible, limit)

    def _block(self, params: dict[str, Any], visible: bool, limit: int | None) -> Response:
        id_or_num = str(params.get("id_or_num") or "").strip()
        detail = _truthy(params.get("detail"))  # false by default: header only
        if not id_or_num:
            return self._block_reply(limit, visible, limit, detail)
        if _INTEGER.match(id_or_num):
            number = int(id_or_num)
            if number < 0:
                raise NodeError("num must be non-positive number.", "")
            return self._block_reply(number, visible, limit, detail)
        if not _HASH.match(id_or_num):
            raise NodeError("id must be legal block hash.", "")
        block = self._store.by_id(id_or_num.lower())
        if block is None or limit is None or block.number > limit:
            return raw_json(b"{}")
        return raw_json(self._render.block_bytes(block, visible, detail))

    def _block_by_limit_next(self, params: dict[str, Any], visible: bool, limit: int | None) -> Response:
        start, end = _int_param(params, "startNum"), _int_param(params, "endNum")
        if not 0 < end - start <= MAX_LIMIT_NEXT:
            raise NodeError(f"endNum - startNum must be in (0, {MAX_LIMIT_NEXT}], got {start}..{end}")
        blocks = [] if limit is None else self._store.blocks(start, end, limit)
        return raw_json(self._render.blocks_bytes(blocks, visible))

    # -- transactions --------------------------------------------------------------------------

    def _infos_by_block_num(self, params: dict[str, Any], visible: bool, limit: int | None) -> Response:
        number = _int_param(params, "num")
        if number <= 0:
            return raw_json(b"{}")  # java-tron answers {} rather than [] for num <= 0
        block = None if limit is None else self._store.block(number, limit)
        if block is None:
            return raw_json(b"[]")
        return raw_json(self._render.infos_bytes(block, visible))

    def _lookup_tx(self, params: dict[str, Any], limit: int | None) -> tuple[Block, Tx] | None:
        tx_id = str(params.get("value") or "").strip().lower()
        found = self._store.tx(tx_id) if _HASH.match(tx_id) else None
        if found is None or limit is None or found[0].number > limit:
            return None
        return found

    def _tx_by_id(self, params: dict[str, Any], visible: bool, limit: int | None) -> Response:
        found = self._lookup_tx(params, limit)
        if found is None:
            return raw_json(b"{}")
        return json_response(self._render.tx(found[1], visible))

    def _info_by_id(self, params: dict[str, Any], visible: bool, limit: int | None) -> Response:
        found = self._lookup_tx(params, limit)
        if found is None:
            return raw_json(b"{}")
        return json_response(self._render.info(found[0], found[1], visible))
