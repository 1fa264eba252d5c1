"""The world of one run: cells with their bands, devices with their batteries, links, random streams.

Random streams: every stream is its own ``numpy.random.Generator`` seeded from
``SeedSequence([seed, STREAM, ...])``, so placement, shadowing, fading, selection and training never
share draws and comparing two runs on one seed sees the same channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import numpy as np
import simpy

from ..net.channel import dbm_to_w, effective_noise_density_w_per_hz
from ..net.device import Battery, DeviceProfile
from ..net.linkstate import LinkState, SampledPositions, coherence_times_s
from ..net.placement import place_uniform_disc, place_uniform_square
from ..net.linkmodel import SHANNON, LinkAbstraction
from ..net.radio import SharedBand
from ..scenario import Scenario

STREAM_PLACEMENT = 1
STREAM_PROFILE = 2
STREAM_SHADOWING = 3
STREAM_FADING_UL = 4
STREAM_FADING_DL = 5
STREAM_SELECTION = 6
STREAM_TRAINING = 7
STREAM_PREFERENCE = 8
STREAM_MOBILITY = 9
STREAM_PACKET_ERRORS = 10  # one stream per (device, round, upload attempt): pwffsim.sim.packets
_FADING_STREAM = {"ul": STREAM_FADING_UL, "dl": STREAM_FADING_DL}


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one random stream of one run."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def training_seed(seed: int, round_index: int, client: int) -> int:
    """Seed of one client's local update in one round (independent of who trains it, and when)."""
    return int(np.random.SeedSequence([seed, STREAM_TRAINING, round_index, client]).generate_state(1)[0])


@dataclass
class Cell:
    index: int
    id: str
    position_m: np.ndarray
    bs_tx_power_w: float
    uplink: SharedBand
    downlink: SharedBand

    def band(self, direction: str) -> SharedBand:
        return self.downlink if direction == "dl" else self.uplink


@dataclass(slots=True)
class Device:
    """Plain per-device state (what a checkpoint needs: battery level, alive flag, serving cell).

    Made on first use (:class:`DeviceTable`): a device nothing has asked about costs only its entries
    in the world's arrays (position, profile)."""

    index: int
    profile: DeviceProfile
    position_m: np.ndarray  # position when it first appears (see first_appearance)
    cell: int               # serving cell (on arrival; changes at handovers)
    battery: Battery
    alive: bool = True
    t_dropout_s: float = math.nan
    links: Any = field(default=None, repr=False)  # the world's LinkState

    def gain(self, cell: int, direction: str, t: float) -> float:
        """Linear gain towards ``cell`` at ``t``: large-scale (at the position sampled at ``t``) x fading."""
        return self.links.gain(self.index, cell, direction, t)

    def ul_gain(self, t: float) -> float:
        return self.gain(self.cell, "ul", t)

    def dl_gain(self, t: float) -> float:
        return self.gain(self.cell, "dl", t)

    def next_change_s(self, direction: str, t: float) -> float:
        return self.links.next_change_s(self.index, self.cell, direction, t)

    @property
    def usable(self) -> bool:
        """Alive with battery left (availability and coverage are the world's to say)."""
        return self.alive and not self.battery.empty


def build_profiles(sc: Scenario) -> list[DeviceProfile]:
    return [
        DeviceProfile(
            name=p.name, flops_per_s=p.throughput_flops_per_s, cpu_hz=p.cpu_hz, flops_per_cycle=p.flops_per_cycle,
            kappa=p.kappa, tx_power_w=dbm_to_w(p.tx_power_dbm), rx_power_w=p.rx_power_w, battery_j=p.battery_j,
            pa_efficiency=p.pa_efficiency, circuit_power_w=p.circuit_power_w, idle_power_w=p.idle_power_w,
            noise_figure_db=p.noise_figure_db,
        )
        for p in sc.devices.profiles
    ]


def cell_configs(sc: Scenario):
    """The scenario's cells, or the topology's base stations: each is cells[0] with the keys a base
    station supplies (``TOPOLOGY_CELL_KEYS``, and its noise figure if its file sets one) replaced, so
    cells[0] still gives the noise density (and the noise figure of base stations without one)."""
    if sc.topology is None:
        return list(sc.cells), None
    from ..net.topology import load_topology
    from ..scenario.schema import TOPOLOGY_CELL_KEYS

    topo = load_topology(sc.topology)
    renamed = {"bs_tx_power_dbm": "tx_power_dbm"}  # CellConfig key -> BaseStation attribute
    cells = [sc.cells[0].model_copy(update={k: getattr(b, renamed.get(k, k)) for k in TOPOLOGY_CELL_KEYS})
             for b in topo.base_stations]
    cells = [c if b.noise_figure_db is None else c.model_copy(update={"noise_figure_db": b.noise_figure_db})
             for c, b in zip(cells, topo.base_stations)]
    return cells, topo


def build_link_budget(sc: Scenario, cfgs, topology):
    """The link budget: the scenario's path-loss model (the topology's channel_model unless
    channel.path_loss is set) with the scenario's shadowing sigma if it sets one, over the cells
    (a cell without a height gets the model's standard mast height)."""
    from ..net.links import CellSite, LinkBudget
    from ..net.pathloss import make_path_loss_model

    ch = sc.channel
    model = make_path_loss_model(ch.path_loss_under(None if topology is None else topology.channel_model),
                                 ch.shadowing_sigma_db)
    sites = [CellSite(c.x_m, c.y_m, c.height_m, c.carrier_hz, c.bs_tx_power_dbm) for c in cfgs]
    return LinkBudget(model, sites, lambda *keys: stream(sc.seed, STREAM_SHADOWING, *keys), sc.devices.count,
                      correlated=ch.shadowing_correlated, ue_height_m=ch.ue_height_m)


def _centre(cells) -> tuple[float, float]:
    return float(np.mean([c.x_m for c in cells])), float(np.mean([c.y_m for c in cells]))


def place_devices(sc: Scenario, cells) -> np.ndarray:
    d = sc.devices
    rng = stream(sc.seed, STREAM_PLACEMENT)
    if d.placement == "explicit":
        return np.asarray(d.positions_m, dtype=float).reshape(d.count, 2)
    sites = [(c.x_m, c.y_m) for c in cells]  # min_distance_m keeps devices away from every base station
    if d.placement == "disc":
        return place_uniform_disc(rng, d.count, _centre(cells), d.radius_m, d.min_distance_m, sites_m=sites)
    return place_uniform_square(rng, d.count, _centre(cells), d.side_m, d.min_distance_m, sites_m=sites)


def build_mobility(sc: Scenario, positions: np.ndarray, cells):
    """A MobilityModel for the scenario, or None for static devices."""
    from ..net import mobility as mob

    m = sc.mobility
    if m.model == "static":
        return None
    n = sc.devices.count
    if m.model == "trace":
        trajectories = mob.load_trace(m.trace, m.trace_format, m.activity)
        model = mob.MobilityModel(trajectories, client_ids=m.client_ids or None, offset_m=m.offset_m, scale=m.scale,
                                  end=m.end, area=m.area_m)
        if model.num_clients < n:
            raise ValueError(f"mobility.trace: {m.trace} has {model.num_clients} nodes for devices.count={n} devices "
                             f"(set devices.count or mobility.client_ids)")
        return model
    cx, cy = _centre(cells)
    half = sc.devices.side_m / 2
    area = m.area_m if m.area_m is not None else (cx - half, cy - half, cx + half, cy + half)
    rng = stream(sc.seed, STREAM_MOBILITY)
    start = np.clip(positions, [area[0], area[1]], [area[2], area[3]])
    if m.model == "random-waypoint":
        trajectories = mob.random_waypoint(rng, n, area, speed_range_mps=(m.speed_min_mps, m.speed_max_mps),
                                           pause_s=(0.0, m.pause_max_s), duration_s=m.duration_s, start_positions=start)
    else:
        trajectories = mob.gauss_markov(rng, n, area, mean_speed_mps=m.mean_speed_mps, alpha=m.gauss_markov_alpha,
                                        duration_s=m.duration_s, start_positions=start)
    return mob.MobilityModel(trajectories, end="hold", area=m.area_m)


def link_abstractions(ch) -> dict[str, LinkAbstraction]:
    """SINR -> rate of each direction: Shannon, or TR 36.942's truncated Shannon (channel.link_abstraction)."""
    if ch.link_abstraction == "shannon":
        return {"ul": SHANNON, "dl": SHANNON}
    smin = ch.truncated_sinr_min_db
    return {"ul": LinkAbstraction.truncated(ch.truncated_alpha_ul, smin, ch.truncated_se_max_ul_bps_hz),
            "dl": LinkAbstraction.truncated(ch.truncated_alpha_dl, smin, ch.truncated_se_max_dl_bps_hz)}


def _build_cells(cfgs, env: simpy.Environment, links: dict[str, LinkAbstraction]) -> list[Cell]:
    """Cells with their bands: the uplink's noise density holds the base station's noise figure, the
    downlink's is N0 (each download adds its device's noise figure)."""
    cells = []
    for i, c in enumerate(cfgs):
        n0 = dbm_to_w(c.noise_density_dbm_hz)
        n0_bs = effective_noise_density_w_per_hz(n0, c.noise_figure_db)
        cells.append(Cell(
            index=i, id=c.id, position_m=np.array([c.x_m, c.y_m], dtype=float),
            bs_tx_power_w=dbm_to_w(c.bs_tx_power_dbm),
            uplink=SharedBand(env, c.uplink_bandwidth_hz, n0_bs, shared=True, name=f"{c.id}/ul", link=links["ul"]),
            downlink=SharedBand(env, c.downlink_bandwidth_hz, n0, shared=False, name=f"{c.id}/dl", link=links["dl"]),
        ))
    return cells


def _profile_indices(sc: Scenario, profiles: list[DeviceProfile]) -> np.ndarray:
    if sc.devices.profile_of_device:
        by_name = {p.name: i for i, p in enumerate(profiles)}
        return np.array([by_name[name] for name in sc.devices.profile_of_device])
    shares = np.array([p.share for p in sc.devices.profiles], dtype=float)
    return stream(sc.seed, STREAM_PROFILE).choice(len(profiles), size=sc.devices.count, p=shares / shares.sum())


def first_appearance(positions: SampledPositions, k: int) -> Optional[np.ndarray]:
    """Device ``k``'s position at the first sampling instant at which it is present (at t = 0 unless
    its trace inserts it later, an activity file starts it later or it starts outside the covered
    area), or None if it never is.

    A device is associated with the strongest cell at this position: for one present at t = 0 that is
    the association at the start; for one that appears later, the cell it attaches to on arrival
    (nothing uses its cell before, and the A3 rule then starts from that cell, so arriving is not a
    handover).  Walks the mobility model's change points (samples, activity start/stop, area-edge
    crossings): presence cannot change between two of them.
    """
    mob = positions.mobility
    if mob is None:
        return positions.static_m[k]
    step, t = positions.step_s, 0.0
    while math.isfinite(t):
        s = math.ceil(t / step - 1e-9) * step  # the first sampling instant at or after t
        xy = positions.position(k, s)
        if xy is not None:
            return xy
        t = mob.next_change_s(k, s)
    return None


class DeviceTable:
    """``world.devices``: a sequence of :class:`Device` made on first access (``make(k)``), so a run over
    a large population pays only for the devices it touches.  Iterating makes every device."""

    __slots__ = ("_n", "_make", "_made")

    def __init__(self, n: int, make: Callable[[int], Device]):
        self._n, self._make, self._made = n, make, {}

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: int) -> Device:
        dev = self._made.get(k)
        if dev is None:
            if isinstance(k, slice) or not -self._n <= k < self._n:
                raise IndexError(f"device index {k!r} out of range ({self._n} devices)")
            k = k % self._n
            dev = self._made.get(k)
            if dev is None:
                dev = self._made[k] = self._make(k)
        return dev

    def __iter__(self) -> Iterator[Device]:
        return (self[k] for k in range(self._n))

    def made(self):
        """(index, device) of the devices made so far."""
        return list(self._made.items())

    def get_made(self, k: int) -> Optional[Device]:
        return self._made.get(k)


class World:
    """Cells, devices and their links, with positions sampled every ``mobility.sample_step_s``."""

    def __init__(self, sc: Scenario, env: simpy.Environment):
        self.sc = sc
        cfgs, self.topology = cell_configs(sc)
        self.cells: list[Cell] = _build_cells(cfgs, env, link_abstractions(sc.channel))
        ch = sc.channel
        n = sc.devices.count
        self.link = build_link_budget(sc, cfgs, self.topology)
        positions = place_devices(sc, cfgs)
        self.mobility = build_mobility(sc, positions, cfgs)
        self.positions = SampledPositions(positions, self.mobility, sc.mobility.sample_step_s)
        self._profiles = build_profiles(sc)
        self._profile_index = _profile_indices(sc, self._profiles)
        self._static_m = positions
        self._usable0: Optional[np.ndarray] = None  # usable at the start, per device (made on first use)
        coherence = coherence_times_s(self.positions, n, cfgs[0].carrier_hz, ch.coherence_time_s,
                                      ch.coherence_from_speed)
        self.links = LinkState(self.link, self.positions, ch.fading, ch.rician_k_db, coherence,
                               lambda d, k, j: stream(sc.seed, _FADING_STREAM[d], k, j))
        self.devices = DeviceTable(n, self._make_device)

    def _make_device(self, k: int) -> Device:
        """Device ``k`` as it is at the start: full battery, associated with the strongest cell where it
        first appears (its own draws only, so when it is made does not matter)."""
        xy = first_appearance(self.positions, k)
        prof = self._profiles[int(self._profile_index[k])]
        cell = 0 if len(self.cells) == 1 else int(np.argmax(self.link.rsrp_dbm(k, xy)))
        return Device(index=k, profile=prof, position_m=(self._static_m[k] if xy is None else xy).copy(), cell=cell,
                      battery=Battery(prof.battery_j), links=self.links)

    def usable_mask(self) -> np.ndarray:
        """Per device: alive with battery left (a device not made yet is as at the start)."""
        if self._usable0 is None:
            self._usable0 = np.array([p.battery_j > 0.0 for p in self._profiles])[self._profile_index]
        mask = self._usable0.copy()
        for k, dev in self.devices.made():
            mask[k] = dev.usable
        return mask

    def usable(self, k: int) -> bool:
        dev = self.devices.get_made(k)
        return dev.usable if dev is not None else self.battery_capacity_j(k) > 0.0  # not made yet: as at the start

    def battery_level_j(self, k: int) -> float:
        dev = self.devices.get_made(k)
        return dev.battery.level_j if dev is not None else self.battery_capacity_j(k)

    def battery_capacity_j(self, k: int) -> float:
        return float(self._profiles[int(self._profile_index[k])].battery_j)

    def devices_alive(self) -> int:
        """Devices not dropped out (a device not made yet is alive)."""
        return len(self.devices) - sum(not d.alive for _, d in self.devices.made())

    # Views the orchestrator and tests use (the network side owns the state).
    @property
    def moving(self) -> bool:
        return self.positions.moving

    @property
    def step_s(self) -> float:
        return self.positions.step_s

    def position(self, k: int, t: float) -> Optional[np.ndarray]:
        return self.positions.position(k, t)

    def available(self, k: int, t: float) -> bool:
        return self.positions.available(k, t)

    def next_position_change_s(self, k: int, t: float) -> float:
        return self.positions.next_change_s(k, t)

    def large_scale_gain(self, k: int, cell: int, t: float):
        return self.links.large_scale_gain(k, cell, t)

    def fading(self, k: int, cell: int, direction: str):
        return self.links.fading(k, cell, direction)

    def cell_id(self, dev: Device) -> str:
        return self.cells[dev.cell].id

    def set_downlink(self, downlink: str, asynchronous: bool) -> None:
        """How the downlink bands carry the model (``channel.downlink``): ``"per-receiver"`` keeps each
        receiver on the whole band at its own SNR; ``"multicast"`` makes a synchronous broadcast one
        multicast at the worst receiver's rate, and asynchronous downloads unicast FDMA shares."""
        mode = "broadcast" if downlink == "per-receiver" else "fdma-split" if asynchronous else "multicast"
        for c in self.cells:
            c.downlink.set_mode(mode)

    def edge_of(self, dev: Device) -> str:
        """The edge server the device's serving cell hangs off (the topology's)."""
        return self.topology.edge_of(self.cells[dev.cell].id)
