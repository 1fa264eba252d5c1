"""Device computation and energy: closed forms of the standard wireless-FL system model.

Local computation (Yang et al., IEEE TWC 2021): time = FLOPs / (FLOP/s); cycles = FLOPs / (FLOPs per cycle);
energy = kappa x cycles x f^2.  A :class:`Battery` is the level every activity draws from.
Never imports torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


def compute_time_s(flops: float, flops_per_s: float) -> float:
    """Time to execute ``flops`` at a sustained ``flops_per_s`` (s)."""
    if flops < 0 or flops_per_s <= 0:
        raise ValueError(f"need flops >= 0 and flops_per_s > 0, got {flops}, {flops_per_s}")
    return flops / flops_per_s


def compute_cycles(flops: float, flops_per_cycle: float) -> float:
    """CPU cycles needed for ``flops`` (cycles = FLOPs / FLOPs-per-cycle)."""
    if flops_per_cycle <= 0:
        raise ValueError(f"flops_per_cycle must be > 0, got {flops_per_cycle}")
    return flops / flops_per_cycle


def compute_energy_j(kappa: float, cycles: float, cpu_hz: float) -> float:
    """Dynamic CPU energy kappa * cycles * f^2 (J) (Yang et al., IEEE TWC 2021, eq. 3)."""
    return kappa * cycles * cpu_hz * cpu_hz


@dataclass
class DeviceProfile:
    """The numbers of one device class (plain data; built from the scenario)."""

    name: str
    flops_per_s: float
    cpu_hz: float
    flops_per_cycle: float
    kappa: float
    tx_power_w: float
    rx_power_w: float
    battery_j: float

    def compute_cost(self, flops: float) -> tuple[float, float]:
        """(time_s, energy_j) of executing ``flops`` on this device."""
        t = compute_time_s(flops, self.flops_per_s)
        e = compute_energy_j(self.kappa, compute_cycles(flops, self.flops_per_cycle), self.cpu_hz)
        return t, e


class Battery:
    """A level of energy (J) that every activity of a device draws from.

    ``draw`` never lets the level go below zero: it returns the energy actually drawn.
    """

    def __init__(self, capacity_j: float, level_j: float | None = None):
        if capacity_j < 0:
            raise ValueError(f"battery capacity must be >= 0 J, got {capacity_j}")
        self.capacity_j = float(capacity_j)
        self.level_j = float(capacity_j if level_j is None else level_j)

    @property
    def empty(self) -> bool:
        return self.level_j <= 0.0

    def draw(self, energy_j: float) -> float:
        """Take ``energy_j`` (clamped to the level); returns what was taken."""
        taken = min(max(energy_j, 0.0), self.level_j)
        self.level_j -= taken
        if self.level_j < 0.0:
            self.level_j = 0.0
        return taken

    def drain_all(self) -> float:
        taken = self.level_j
        self.level_j = 0.0
        return taken

    def time_to_empty_s(self, power_w: float) -> float:
        """How long the battery lasts at a constant ``power_w`` (inf at zero power)."""
        if power_w <= 0:
            return math.inf
        return self.level_j / power_w

    def __repr__(self) -> str:
        return f"Battery(level_j={self.level_j:.6g}, capacity_j={self.capacity_j:.6g})"
