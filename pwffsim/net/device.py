"""Device computation and energy: closed forms of the standard wireless-FL system model.

Local computation (Yang et al., IEEE TWC 2021): time = FLOPs / (FLOP/s); cycles = FLOPs / (FLOPs per cycle);
energy = kappa x cycles x f^2; transmitting draws p / eta + P_c (PA efficiency, circuit power).  A
:class:`Battery` is the level every activity draws from.
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


def transmit_drain_power_w(tx_power_w: float, pa_efficiency: float = 1.0, circuit_power_w: float = 0.0) -> float:
    """Battery power drawn while transmitting: ``p / eta + P_c`` (W), the radiated power ``p`` through a
    power amplifier of drain efficiency ``eta`` plus the transmit chain's circuit power ``P_c``.

    Source: Cui, Goldsmith & Bahai, "Energy-constrained modulation optimization", IEEE TWC 4(5), 2005
    (``P = (1 + alpha) P_out + P_c``, ``alpha = 1/eta - 1``).  ``eta = 1`` and ``P_c = 0`` give ``p``
    bit for bit (Yang et al.'s transmit energy ``p x`` time).
    """
    if not 0 < pa_efficiency <= 1 or circuit_power_w < 0 or tx_power_w < 0:
        raise ValueError(f"need tx_power_w >= 0, 0 < pa_efficiency <= 1, circuit_power_w >= 0; got "
                         f"{tx_power_w}, {pa_efficiency}, {circuit_power_w}")
    return tx_power_w / pa_efficiency + circuit_power_w


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
    # Terms beyond Yang et al.'s model; the defaults leave it as it is.
    pa_efficiency: float = 1.0      # transmit drain = tx_power_w / pa_efficiency + circuit_power_w
    circuit_power_w: float = 0.0
    idle_power_w: float = 0.0       # drawn while taking part in a round and not active (pwffsim.sim.idle)
    noise_figure_db: float = 0.0    # receiver noise figure (downlink): N0 x 10^(NF/10)

    @property
    def tx_drain_power_w(self) -> float:
        """Battery power while transmitting (W): :func:`transmit_drain_power_w`."""
        return transmit_drain_power_w(self.tx_power_w, self.pa_efficiency, self.circuit_power_w)

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
