"""Energy and bandwidth units: java-tron's formula (ledger/chain/resources.py) on mainnet's own
figures, and the summary's units against the simulator's getaccountresource at the same block."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from harness.procs import ROOT, Proc
from harness.stack import SIM_ACCOUNTS, start_chain, start_listener, start_worker, wait_until
from harness.truth import watermark
from ledger.chain.node import node_from_settings
from ledger.chain.resources import network_totals, resource_units
from ledger.config import Settings
from ledger.coordination.budget import Priority
from ledger.store.cache import create_cache_client
from ledger.store.db import create_pool
from web.app import close_app, create_app
from workers import actors
from workers.actors import Deps
from workers.dbgate import DbGate
from workers.invalidator import Invalidator

FIXTURE = ROOT / "tests" / "fixtures" / "tron" / "mainnet_getaccountresource_TL24LCps.json"


def test_the_formula_gives_mainnets_own_energy_limit() -> None:
    """The sample account stakes 403 TRX (its tronPowerLimit), all for energy: mainnet answered
    EnergyLimit 4448 with these totals."""
    reply = json.loads(FIXTURE.read_text())
    totals = network_totals(reply)
    assert (totals.total_energy_limit, totals.total_energy_weight) == (180_000_000_000, 16_307_698_552)
    assert totals.units("ENERGY", reply["tronPowerLimit"] * 1_000_000) == reply["EnergyLimit"]
    assert totals.units("BANDWIDTH", 1_000_000) == int(1.0 * (43_200_000_000 / 27_908_390_830))
    assert totals.units("TRON_POWER", 10) is None
    assert resource_units(5, 100, 0) == 0  # java-tron: a zero weight gives nothing


def js(response: Any) -> Any:
    return response.json


@pytest.mark.slow
def test_summary_units_equal_the_simulators_at_the_same_block(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given the ledger caught up with a paused chain
    sim = start_chain(procs, settings, "--history-blocks", "80", "--ops-per-block", "3", "--paused")
    head = int(sim.status()["head"])
    run_env = {**env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(sim.status()["start_block"])}
    procs.append(start_worker(run_env))
    procs.append(start_listener(run_env))
    # and blocks without stake transactions on top, past the solidified head: the state the ledger
    # shows at its checkpoint is then the state at the solidified block the totals are read at
    for _ in range(25):
        assert sim.http.post("/sim/submit", json={"transactions": []}).status_code == 200
    head = int(sim.status()["head"])
    wait_until(lambda: (watermark(settings.database_url) or 0) >= head, 60, "the ledger at the head")
    # When the totals job runs (the worker's actor body, in process)
    wsettings = dataclasses.replace(settings, tron_node_url=sim.url)
    pool = create_pool(settings.database_url, max_size=1, name="test")
    deps = Deps(
        settings=wsettings,
        pool=pool,
        gate=DbGate(settings.database_url, pool),
        invalidator=Invalidator(create_cache_client(settings.cache_redis_url, 0.25)),
        node=node_from_settings(wsettings, priority=Priority.BACKGROUND),
    )
    try:
        actors.read_network_totals(deps, None)
    finally:
        pool.close()
    solid = int(
        sim.http.post("/walletsolidity/getblock", json={"detail": False}).json()["block_header"]["raw_data"]["number"]
    )
    # Then each summary's units are the simulator's limits at that block
    app = create_app(settings)
    compared = 0
    try:
        client = app.test_client()
        for account in SIM_ACCOUNTS:
            summary = js(client.get(f"/api/accounts/{account}/summary"))["data"]
            assert summary["resource_units"]["block"] == solid
            truth = sim.http.post(
                "/walletsolidity/getaccountresource", json={"address": account, "visible": True}
            ).json()
            state = sim.http.get("/sim/account-state", params={"account": account, "block": solid}).json()
            assert summary["resource_units"]["total_energy_weight"] == truth["TotalEnergyWeight"]
            for res, limit in (("ENERGY", "EnergyLimit"), ("BANDWIDTH", "NetLimit")):
                figures = summary["resources"][res]
                if not state["acquired"][res]:  # the chain's limit counts what an account received too
                    assert figures["units"]["staked"] == truth.get(limit, 0), (account, res)
                    compared += 1
                # What a customer gets: a receiver whose only stake is this delegation has exactly
                # the delegation's units as its limit on chain
                for receiver in figures["delegated"]["receivers"]:
                    address = receiver["receiver_address"]
                    theirs = sim.http.get("/sim/account-state", params={"account": address, "block": solid}).json()
                    own = theirs["frozenV2"][res] + theirs["frozenV1"].get(res, {}).get("frozen_balance", 0)
                    if own or theirs["acquired"][res] != receiver["locked"] + receiver["unlocked"]:
                        continue
                    limits = sim.http.post(
                        "/walletsolidity/getaccountresource", json={"address": address, "visible": True}
                    ).json()
                    assert receiver["units"] == limits.get(limit, 0), (account, address, res)
                    compared += 1
            assert summary["resources"]["TRON_POWER"]["units"]["staked"] is None
    finally:
        close_app(app)
    print(f"{compared} figures compared")
    assert compared > 0
