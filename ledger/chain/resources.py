"""Energy and bandwidth as java-tron computes them from stake (sun) and the network's totals.

java-tron (chainbase/src/main/java/org/tron/core/db/EnergyProcessor.java `calculateGlobalEnergyLimitV2`,
BandwidthProcessor.java `calculateGlobalNetLimitV2`, the rule since Stake 2.0's unfreeze delay):

    double weight = (double) frozeBalance / TRX_PRECISION;
    if (totalWeight == 0) return 0;
    return (long) (weight * ((double) totalLimit / totalWeight));

with totalLimit / totalWeight the dynamic properties TotalEnergyCurrentLimit / TotalEnergyWeight
(TotalNetLimit / TotalNetWeight), which `getaccountresource` reports as TotalEnergyLimit,
TotalEnergyWeight, TotalNetLimit, TotalNetWeight (framework/.../core/Wallet.java getAccountResource).
Python's float is Java's double and int() truncates toward zero as the cast does, so the same
operations in the same order give the same number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.chain.values import ChainDataError

TRX_PRECISION = 1_000_000  # sun per TRX


@dataclass(frozen=True)
class NetworkTotals:
    """The network's totals as getaccountresource reported them."""

    total_energy_limit: int
    total_energy_weight: int
    total_net_limit: int
    total_net_weight: int

    def units(self, resource: str, sun: int) -> int | None:
        """`sun` of stake (or delegation) of `resource` in energy / bandwidth units; None for
        TRON_POWER, which has none."""
        if resource == "ENERGY":
            return resource_units(sun, self.total_energy_limit, self.total_energy_weight)
        if resource == "BANDWIDTH":
            return resource_units(sun, self.total_net_limit, self.total_net_weight)
        return None


def resource_units(sun: int, total_limit: int, total_weight: int) -> int:
    """calculateGlobalEnergyLimitV2 / calculateGlobalNetLimitV2 (see the module doc)."""
    if total_weight == 0:
        return 0
    weight = sun / TRX_PRECISION
    return int(weight * (total_limit / total_weight))


def network_totals(reply: Any) -> NetworkTotals:
    """The totals of a getaccountresource reply; ChainDataError if one is missing or not a count."""
    if not isinstance(reply, dict):
        raise ChainDataError(f"getaccountresource: expected an object, got {type(reply).__name__}")
    values = {}
    for field in ("TotalEnergyLimit", "TotalEnergyWeight", "TotalNetLimit", "TotalNetWeight"):
        value = reply.get(field, 0)  # java-tron's JSON leaves out zeros
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ChainDataError(f"getaccountresource: {field} {value!r} is not a count")
        values[field] = value
    return NetworkTotals(
        values["TotalEnergyLimit"], values["TotalEnergyWeight"], values["TotalNetLimit"], values["TotalNetWeight"]
    )
