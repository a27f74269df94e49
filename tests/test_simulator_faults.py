"""Fault injection in the simulator (simulator/faults.py), against a real subprocess over HTTP.

One paused simulator serves every test; each test switches faults on through POST /sim/faults,
and an autouse fixture switches them off again, so a failing test cannot leak faults.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from simulator.config import parse_config
from tests.test_simulator import START, Sim, _num, _start

HEAD = START + 29
SOLID = HEAD - 5


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    yield from _start("--paused", "--seed", "11", "--history-blocks", "30", "--solid-lag", "5", "--fault-rate", "0")


@pytest.fixture(autouse=True)
def no_faults_after(sim: Sim) -> Iterator[None]:
    sim.post("/sim/faults", {"rate": 0, "every": 0, "suspended": False, "reset_counts": True, "timeout_seconds": 12})
    yield
    sim.post("/sim/faults", {"rate": 0, "every": 0, "suspended": False, "kinds": ALL_KINDS})


ALL_KINDS = ["rate_limit", "server_error", "error_key", "timeout", "truncated", "empty_block", "head_backwards"]


def call(sim: Sim, path: str, body: Any = None, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """One request on a fresh connection: (status, content type, body). POST when `body` is given."""
    host, port = sim.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, reply.headers.get("Content-Type", ""), reply.read()
    finally:
        connection.close()


def only(sim: Sim, kind: str, **extra: Any) -> None:
    sim.post("/sim/faults", {"rate": 1.0, "kinds": [kind], "reset_counts": True, **extra})


def counts(sim: Sim) -> dict[str, int]:
    got: dict[str, int] = sim.get("/sim/faults")["counts"]
    return got


def test_status_and_chain_are_as_configured(sim: Sim) -> None:
    status = sim.get("/sim/status")
    assert (status["head"], status["solid"], status["paused"]) == (HEAD, SOLID, True)
    view = sim.get("/sim/faults")
    assert view["rate"] == 0 and view["kinds"] == ALL_KINDS and view["suspend_seconds"] == 2


def test_server_error_is_html(sim: Sim) -> None:
    only(sim, "server_error")
    statuses = set()
    for _ in range(12):
        status, content_type, body = call(sim, "/wallet/getnowblock")
        assert status in (500, 502) and content_type.startswith("text/html") and body.startswith(b"<html")
        statuses.add(status)
    assert statuses == {500, 502}
    assert counts(sim)["server_error"] == 12


def test_error_key_is_http_200(sim: Sim) -> None:
    only(sim, "error_key")
    status, _, body = call(sim, "/wallet/getblockbynum", {"num": START + 3})
    assert status == 200
    assert json.loads(body)["Error"].startswith("class org.tron.core.exception.BadItemException : ")
    assert counts(sim)["error_key"] == 1


def test_truncated_json(sim: Sim) -> None:
    _, _, whole = call(sim, "/wallet/getblockbynum", {"num": START + 4})
    only(sim, "truncated")
    status, _, body = call(sim, "/wallet/getblockbynum", {"num": START + 4})
    assert status == 200 and len(body) == len(whole) // 2 and whole.startswith(body)
    with pytest.raises(ValueError):
        json.loads(body)
    assert counts(sim)["truncated"] == 1


def test_empty_block_for_existing_blocks(sim: Sim) -> None:
    only(sim, "empty_block")
    assert call(sim, "/wallet/getblockbynum", {"num": START + 5})[2] == b"{}"
    assert call(sim, "/wallet/getnowblock")[2] == b"{}"
    assert call(sim, "/wallet/getblockbylimitnext", {"startNum": START, "endNum": START + 10})[2] == b"{}"
    # Not a block endpoint: left alone, since empty_block is the only kind allowed.
    assert json.loads(call(sim, "/wallet/gettransactioninfobyblocknum", {"num": START + 5})[2]) is not None
    assert counts(sim)["empty_block"] == 3


def test_head_moves_backwards(sim: Sim) -> None:
    only(sim, "head_backwards")
    seen = set()
    for _ in range(20):
        seen.add(_num(json.loads(call(sim, "/wallet/getnowblock")[2])))
    assert seen <= set(range(HEAD - 5, HEAD)) and len(seen) > 1
    solid = _num(json.loads(call(sim, "/walletsolidity/getnowblock?visible=true")[2]))
    assert SOLID - 5 <= solid < SOLID
    assert counts(sim)["head_backwards"] == 21
    # Only getnowblock lags: a block by number is what it is.
    assert _num(json.loads(call(sim, "/wallet/getblockbynum", {"num": HEAD})[2])) == HEAD


def test_timeout_answers_late_or_never(sim: Sim) -> None:
    only(sim, "timeout", timeout_seconds=1.0)
    failures: set[type] = set()
    for _ in range(8):
        started = time.monotonic()
        with pytest.raises((TimeoutError, socket.timeout, http.client.RemoteDisconnected, ConnectionError)) as caught:
            call(sim, "/wallet/getnowblock", timeout=0.3)
        assert time.monotonic() - started < 0.9
        failures.add(type(caught.value))
    assert len(failures) == 2, "both a late answer (client timeout) and a dropped connection"
    assert counts(sim)["timeout"] == 8
    sim.post("/sim/faults", {"rate": 0})
    time.sleep(1.0)  # the delayed answers are written to closed sockets; the server shrugs
    assert call(sim, "/wallet/getnowblock")[0] == 200


def test_rate_limit_suspension_extends_while_hammered_then_lifts(sim: Sim) -> None:
    only(sim, "rate_limit", suspend_seconds=0.6)
    status, _, body = call(sim, "/wallet/getnowblock")
    assert status in (403, 429, 503)
    error = json.loads(body)["Error"]
    assert "suspended for 1" in error and ("frequency limit" in error or "allowed_rps" in error)
    sim.post("/sim/faults", {"rate": 0})  # no new faults: only the running suspension refuses now
    refused = 1
    until = time.monotonic() + 1.5  # well past 0.6 s, but every request extends the suspension
    while time.monotonic() < until:
        assert call(sim, "/wallet/getblockbynum", {"num": START})[:3:2] == (status, body)
        assert sim.get("/sim/status")["head"] == HEAD  # the control API is never refused
        refused += 1
        time.sleep(0.1)
    view = sim.get("/sim/faults")
    assert view["suspended"] is True and view["suspensions"] == 1 and view["counts"]["rate_limit"] == refused
    time.sleep(0.8)
    status, _, body = call(sim, "/wallet/getnowblock")
    assert status == 200 and _num(json.loads(body)) == HEAD
    assert sim.get("/sim/faults")["suspended"] is False


def test_suspension_can_be_forced_and_lifted(sim: Sim) -> None:
    sim.post("/sim/faults", {"suspended": True, "suspend_seconds": 30})
    assert call(sim, "/wallet/getnowblock")[0] in (403, 429, 503)
    sim.post("/sim/faults", {"suspended": False, "suspend_seconds": 2})
    assert call(sim, "/wallet/getnowblock")[0] == 200


def test_faults_never_change_chain_or_truth(sim: Sim) -> None:
    truth = sim.get("/sim/truth")
    blocks = sim.post("/wallet/getblockbylimitnext", {"startNum": START, "endNum": HEAD + 1})
    sim.post("/sim/faults", {"rate": 0.8, "kinds": [k for k in ALL_KINDS if k not in ("timeout", "rate_limit")]})
    outcomes = {call(sim, "/wallet/getblockbynum", {"num": START + i % 30})[0] for i in range(60)}
    assert outcomes >= {200, 500} or outcomes >= {200, 502}
    assert sum(counts(sim).values()) > 20
    sim.post("/sim/faults", {"rate": 0})
    assert sim.get("/sim/truth") == truth
    assert sim.post("/wallet/getblockbylimitnext", {"startNum": START, "endNum": HEAD + 1}) == blocks


def test_every_nth_fitting_request_is_faulty_whatever_the_timing(sim: Sim) -> None:
    # Given faults on every 3rd request that a kind fits, empty_block taking turns with error_key
    sim.post("/sim/faults", {"every": 3, "kinds": ["empty_block", "error_key"], "reset_counts": True})
    # When 6 requests that only error_key fits and 6 block requests (both kinds fit) are made
    replies = [call(sim, "/wallet/gettransactioninfobyblocknum", {"num": START + 1})[2] for _ in range(6)]
    replies += [call(sim, "/wallet/getblockbynum", {"num": START + 1})[2] for _ in range(6)]
    # Then exactly requests 3, 6, 9 and 12 failed; on block requests the two kinds took turns
    faulty = [i + 1 for i, body in enumerate(replies) if body == b"{}" or b'"Error"' in body]
    assert faulty == [3, 6, 9, 12], faulty
    assert replies[8] == b"{}" and b'"Error"' in replies[11]
    assert counts(sim)["empty_block"] == 1 and counts(sim)["error_key"] == 3


def test_bad_fault_settings_are_refused(sim: Sim) -> None:
    for body in (
        {"rate": 2},
        {"every": 1.5},
        {"every": -1},
        {"kinds": ["nope"]},
        {"suspend_seconds": 0},
        {"colour": 1},
        [1],
    ):
        status, _, reply = call(sim, "/sim/faults", body)
        assert status == 400 and "error" in json.loads(reply)


def test_fault_flags_and_environment() -> None:
    config = parse_config(["--fault-rate", "0.3", "--faults", "timeout,truncated"], {"SIM_SUSPEND_SECONDS": "5"})
    assert (config.fault_rate, config.faults, config.suspend_seconds) == (0.3, ("timeout", "truncated"), 5.0)
    defaults = parse_config([], {})
    assert (defaults.fault_rate, defaults.suspend_seconds, defaults.timeout_seconds) == (0.0, 2.0, 12.0)
    assert defaults.faults == tuple(ALL_KINDS)
    env = {"SIM_FORK_RATE": "0.1", "SIM_FORK_DEPTH": "3", "SIM_WS_DROP_EVERY": "7"}
    forks = parse_config([], env)
    assert (forks.fork_rate, forks.fork_depth, forks.ws_drop_every) == (0.1, 3, 7.0)
    with pytest.raises(SystemExit):
        parse_config(["--faults", "rate_limit,meteor"], {})
