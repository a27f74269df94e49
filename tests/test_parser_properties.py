"""Property tests on the chain parsers: whatever JSON a node sends, they return a result or raise
one of the documented errors (ChainDataError, of which MissingTransactionInfo is one, or NodeError);
never a KeyError, TypeError, AttributeError, RecursionError, ... that the listener would not expect.

Two sources of input: arbitrary JSON, and the real chain samples in tests/fixtures/tron mutated
(values replaced by other JSON, keys and items dropped or repeated), so the parsers are driven deep
into real shapes rather than rejecting at the first field. `PROPERTY_EXAMPLES` examples a property.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.chain.parser import (
    needs_transaction_info,
    parse_account,
    parse_block,
    parse_delegated_resources,
    parse_transaction,
    parse_transaction_infos,
    parse_trigger,
    parse_trongrid_record,
)
from ledger.chain.values import ChainDataError, NodeError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tron"
EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "60"))
PROPERTY = settings(max_examples=EXAMPLES * 5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOCUMENTED: tuple[type[Exception], ...] = (ChainDataError, NodeError)


def _load_samples() -> list[Any]:
    samples = []
    for path in sorted(FIXTURES.glob("*.json")):
        try:
            samples.append(json.loads(path.read_text()))
        except ValueError:
            continue  # a documentation sample kept as text
    return samples


SAMPLES = _load_samples()
TRACKED = frozenset(
    {"TL24LCps5FKwp3PoU1MvrYrwhi5LU1tHre", "TGusXhweqkJ1aJftjmAfLqA1rfEWD4hSGZ", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"}
)

# Values a node could plausibly send where another was expected.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "0", "-1", "ENERGY", "BANDWIDTH", "41", "T", "0x", "ab" * 32, "41" + "0" * 40, "Error"]),
    st.text(max_size=80),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=25,
)


def _run_all(doc: Any) -> None:
    """Every parser on `doc`; only the documented errors may come out."""
    infos: dict[str, dict[str, Any]] | None = None
    with contextlib.suppress(*DOCUMENTED):
        infos = parse_transaction_infos(doc)
    calls: list[Callable[[], object]] = [
        lambda: parse_block(doc),
        lambda: parse_block(doc, tracked=TRACKED, infos=infos or {}),
        lambda: parse_block(doc, tracked=None, infos=infos),
        lambda: needs_transaction_info(doc, TRACKED),
        lambda: parse_transaction(
            doc, block_num=1, block_id="ab" * 32, block_time_ms=0, tx_index=0, info=doc, status="pending"
        ),
        lambda: parse_transaction(
            doc, block_num=1, block_id="ab" * 32, block_time_ms=0, tx_index=0, info=None, status="confirmed"
        ),
        lambda: parse_trongrid_record(doc),
        lambda: parse_account(doc),
        lambda: parse_delegated_resources(doc),
        lambda: parse_trigger(doc),
    ]
    for call in calls:
        with contextlib.suppress(*DOCUMENTED):
            call()


@PROPERTY
@given(doc=JSON)
def test_arbitrary_json_raises_only_documented_errors(doc: Any) -> None:
    _run_all(doc)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


def _mutate(doc: Any, path: tuple[Any, ...], how: str, value: Any) -> Any:
    if not path:
        return value if how == "replace" else doc
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "drop":
        del parent[last]
    elif how == "repeat" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif how == "wrap":
        parent[last] = [parent[last]] if isinstance(parent[last], dict) else {"value": parent[last]}
    return doc


@PROPERTY
@given(data=st.data())
def test_mutated_chain_samples_raise_only_documented_errors(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(SAMPLES), label="sample"))
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        path = data.draw(st.sampled_from(_paths(doc)), label="path")
        how = data.draw(st.sampled_from(["replace", "replace", "drop", "repeat", "wrap"]), label="how")
        doc = _mutate(doc, path, how, data.draw(JSON, label="value") if how == "replace" else None)
    _run_all(doc)


def test_the_samples_are_there() -> None:
    assert len(SAMPLES) >= 20  # the property above is only as good as its samples
