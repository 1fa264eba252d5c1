"""The orchestrator: SimPy processes for server rounds, client lifecycles and cell bands.

It builds the world from a validated :class:`~pwffsim.scenario.Scenario` (cells, devices, links),
runs the rounds in simulated time, asks the learning side for each client's update through a
training executor, and writes the traces.  All delays and energies come from the network side; all
model updates come from real training.

Random streams: every stream is its own ``numpy.random.Generator`` seeded from
``SeedSequence([seed, STREAM, ...])``, so placement, shadowing, fading, selection and training never
share draws and comparing two runs on one seed sees the same channel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import simpy

from ..net.channel import BlockFading, coherence_time_s, dbm_to_w, db_to_linear
from ..net.device import Battery, DeviceProfile
from ..net.placement import place_uniform_disc, place_uniform_square
from ..net.radio import SharedBand, Transfer
from ..scenario import Scenario
from ..trace import TraceWriter
from .policies import AggregationPolicy, make_policy

STREAM_PLACEMENT = 1
STREAM_PROFILE = 2
STREAM_SHADOWING = 3
STREAM_FADING_UL = 4
STREAM_FADING_DL = 5
STREAM_SELECTION = 6
STREAM_TRAINING = 7
STREAM_PREFERENCE = 8
STREAM_MOBILITY = 9


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for one random stream of one run."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def training_seed(seed: int, round_index: int, client: int) -> int:
    """Seed of one client's local update in one round (independent of who trains it, and when)."""
    return int(np.random.SeedSequence([seed, STREAM_TRAINING, round_index, client]).generate_state(1)[0])


# ------------------------------------------------------------------------------------ world


@dataclass
class Cell:
    index: int
    id: str
    position_m: np.ndarray
    bs_tx_power_w: float
    uplink: SharedBand
    downlink: SharedBand


@dataclass
class Device:
    """Plain per-device state (what a checkpoint needs: battery level, alive flag, serving cell)."""

    index: int
    profile: DeviceProfile
    position_m: np.ndarray  # initial position
    cell: int               # serving cell (changes at handovers)
    battery: Battery
    alive: bool = True
    t_dropout_s: float = math.nan
    world: Any = field(default=None, repr=False)

    def gain(self, cell: int, direction: str, t: float) -> float:
        """Linear gain towards ``cell`` at ``t``: large-scale (at the position sampled at ``t``) x fading."""
        return self.world.large_scale_gain(self.index, cell, t) * self.world.fading(self.index, cell, direction).gain(t)

    def ul_gain(self, t: float) -> float:
        return self.gain(self.cell, "ul", t)

    def dl_gain(self, t: float) -> float:
        return self.gain(self.cell, "dl", t)

    def next_change_s(self, direction: str, t: float) -> float:
        return min(self.world.fading(self.index, self.cell, direction).next_boundary_s(t),
                   self.world.next_position_change_s(self.index, t))


def build_profiles(sc: Scenario) -> list[DeviceProfile]:
    return [
        DeviceProfile(
            name=p.name, flops_per_s=p.throughput_flops_per_s, cpu_hz=p.cpu_hz, flops_per_cycle=p.flops_per_cycle,
            kappa=p.kappa, tx_power_w=dbm_to_w(p.tx_power_dbm), rx_power_w=p.rx_power_w, battery_j=p.battery_j,
        )
        for p in sc.devices.profiles
    ]


def cell_configs(sc: Scenario):
    """The scenario's cells, or the topology's base stations (noise density from cells[0])."""
    if sc.topology is None:
        return list(sc.cells), None
    from ..net.topology import load_topology
    from ..scenario import CellConfig

    topo = load_topology(sc.topology)
    n0 = sc.cells[0].noise_density_dbm_hz
    cells = [CellConfig(id=b.id, x_m=b.x_m, y_m=b.y_m, uplink_bandwidth_hz=b.uplink_bandwidth_hz,
                        downlink_bandwidth_hz=b.downlink_bandwidth_hz, carrier_hz=b.carrier_hz,
                        bs_tx_power_dbm=b.tx_power_dbm, noise_density_dbm_hz=n0, height_m=b.height_m)
             for b in topo.base_stations]
    return cells, topo


def place_devices(sc: Scenario, cells) -> np.ndarray:
    d = sc.devices
    centre = (float(np.mean([c.x_m for c in cells])), float(np.mean([c.y_m for c in cells])))
    rng = stream(sc.seed, STREAM_PLACEMENT)
    if d.placement == "explicit":
        return np.asarray(d.positions_m, dtype=float).reshape(d.count, 2)
    if d.placement == "disc":
        return place_uniform_disc(rng, d.count, centre, d.radius_m, d.min_distance_m)
    return place_uniform_square(rng, d.count, centre, d.side_m, d.min_distance_m)


def build_mobility(sc: Scenario, positions: np.ndarray, cells):
    """A MobilityModel for the scenario, or None for static devices."""
    from ..net import mobility as mob

    m = sc.mobility
    if m.model == "static":
        return None
    cx, cy = float(np.mean([c.x_m for c in cells])), float(np.mean([c.y_m for c in cells]))
    half = sc.devices.side_m / 2
    area = m.area_m if m.area_m is not None else (cx - half, cy - half, cx + half, cy + half)
    rng = stream(sc.seed, STREAM_MOBILITY)
    n = sc.devices.count
    if m.model == "trace":
        trajectories = mob.load_trace(m.trace, m.trace_format)
        ids = m.client_ids or None
        model = mob.MobilityModel(trajectories, client_ids=ids, offset_m=m.offset_m, scale=m.scale, end=m.end,
                                  area=m.area_m)
        if model.num_clients < n:
            raise ValueError(f"mobility.trace: {m.trace} has {model.num_clients} nodes for devices.count={n} devices "
                             f"(set devices.count or mobility.client_ids)")
        return model
    start = np.clip(positions, [area[0], area[1]], [area[2], area[3]])
    if m.model == "random-waypoint":
        trajectories = mob.random_waypoint(rng, n, area, speed_range_mps=(m.speed_min_mps, m.speed_max_mps),
                                           pause_s=(0.0, m.pause_max_s), duration_s=m.duration_s, start_positions=start)
    else:
        trajectories = mob.gauss_markov(rng, n, area, mean_speed_mps=m.mean_speed_mps, alpha=m.gauss_markov_alpha,
                                        duration_s=m.duration_s, start_positions=start)
    return mob.MobilityModel(trajectories, end="hold", area=m.area_m)


class World:
    """Cells, devices and their links, with positions sampled every ``mobility.sample_step_s``."""

    def __init__(self, sc: Scenario, env: simpy.Environment):
        from ..net.links import CellSite, LinkBudget

        self.sc = sc
        cfgs, self.topology = cell_configs(sc)
        self.cells: list[Cell] = []
        for i, c in enumerate(cfgs):
            n0 = dbm_to_w(c.noise_density_dbm_hz)
            self.cells.append(Cell(
                index=i, id=c.id, position_m=np.array([c.x_m, c.y_m], dtype=float),
                bs_tx_power_w=dbm_to_w(c.bs_tx_power_dbm),
                uplink=SharedBand(env, c.uplink_bandwidth_hz, n0, shared=True, name=f"{c.id}/ul"),
                downlink=SharedBand(env, c.downlink_bandwidth_hz, n0, shared=False, name=f"{c.id}/dl"),
            ))
        ch = sc.channel
        n = sc.devices.count
        self.link = LinkBudget(ch.path_loss, [CellSite(c.x_m, c.y_m, c.height_m, c.carrier_hz, c.bs_tx_power_dbm)
                                              for c in cfgs],
                               ch.shadowing_sigma_db, lambda *keys: stream(sc.seed, STREAM_SHADOWING, *keys), n,
                               correlated=ch.shadowing_correlated, ue_height_m=ch.ue_height_m)
        positions = place_devices(sc, cfgs)
        self.mobility = build_mobility(sc, positions, cfgs)
        self.step_s = sc.mobility.sample_step_s
        profiles = build_profiles(sc)
        shares = np.array([p.share for p in sc.devices.profiles], dtype=float)
        prof_idx = stream(sc.seed, STREAM_PROFILE).choice(len(profiles), size=n, p=shares / shares.sum())
        if sc.devices.profile_of_device:
            by_name = {p.name: i for i, p in enumerate(profiles)}
            prof_idx = np.array([by_name[name] for name in sc.devices.profile_of_device])
        self._static = positions
        self._gain_cache: dict[tuple[int, int, int], float] = {}
        self._fading: dict[tuple[int, int, str], BlockFading] = {}
        self._coherence_s = [self._coherence_time_s(k, cfgs) for k in range(n)]
        self.devices: list[Device] = []
        for k in range(n):
            xy = self.position(k, 0.0)
            rsrp = self.link.rsrp_dbm(k, xy)
            prof = profiles[int(prof_idx[k])]
            self.devices.append(Device(index=k, profile=prof, position_m=(positions[k] if xy is None else xy).copy(),
                                       cell=int(np.argmax(rsrp)), battery=Battery(prof.battery_j), world=self))

    @property
    def moving(self) -> bool:
        return self.mobility is not None

    def _coherence_time_s(self, k: int, cfgs) -> float:
        ch = self.sc.channel
        if self.mobility is None or not ch.coherence_from_speed:
            return ch.coherence_time_s
        traj = self.mobility.trajectory(k)
        if len(traj.t_s) < 2 or traj.t_s[-1] <= traj.t_s[0]:
            return ch.coherence_time_s
        dist = float(np.sum(np.hypot(*np.diff(traj.xy_m, axis=0).T)))
        v = dist / float(traj.t_s[-1] - traj.t_s[0])
        return coherence_time_s(v, cfgs[0].carrier_hz) if v > 0 else ch.coherence_time_s

    def sample_index(self, t: float) -> int:
        return int(math.floor(t / self.step_s + 1e-9)) if self.moving else 0

    def position(self, k: int, t: float) -> Optional[np.ndarray]:
        """Position at the last sample time at or before ``t`` (None: out of coverage / left)."""
        if self.mobility is None:
            return self._static[k]
        return self.mobility.position(k, self.sample_index(t) * self.step_s)

    def available(self, k: int, t: float) -> bool:
        return self.position(k, t) is not None

    def next_position_change_s(self, k: int, t: float) -> float:
        if self.mobility is None:
            return math.inf
        return (self.sample_index(t) + 1) * self.step_s

    def large_scale_gain(self, k: int, cell: int, t: float) -> float:
        key = (k, cell, self.sample_index(t))
        g = self._gain_cache.get(key)
        if g is None:
            if len(self._gain_cache) > 100_000:
                self._gain_cache.clear()
            g = float(db_to_linear(self.link.gain_db(k, cell, self.position(k, t))))
            self._gain_cache[key] = g
        return g

    def fading(self, k: int, cell: int, direction: str) -> BlockFading:
        key = (k, cell, direction)
        f = self._fading.get(key)
        if f is None:
            ch = self.sc.channel
            s_id = STREAM_FADING_UL if direction == "ul" else STREAM_FADING_DL
            f = BlockFading(ch.fading, self._coherence_s[k], stream(self.sc.seed, s_id, k, cell), ch.rician_k_db)
            self._fading[key] = f
        return f


def build_world(sc: Scenario, env: simpy.Environment) -> tuple[list[Cell], list[Device]]:
    w = World(sc, env)
    return w.cells, w.devices


# ------------------------------------------------------------------------------------ run


@dataclass
class ClientOutcome:
    client: int
    status: str = "ok"              # ok | late | dropped | offline
    handle: Any = None              # training handle, set once the computation finished
    t_arrival_s: float = math.nan   # when the upload finished
    downloaded: bool = False        # the broadcast arrived in full
    start_global: dict = field(default_factory=dict)  # the global part the client downloaded
    start_version: int = 0          # its global version (staleness = version at aggregation - this)
    t_start_s: float = math.nan     # when its round began
    energy_j: float = 0.0


@dataclass
class RunState:
    """Everything a later checkpoint needs, in plain objects."""

    round: int = 0
    global_state: dict = field(default_factory=dict)      # the global part (server's copy)
    personal_state: dict = field(default_factory=dict)    # client -> its personal part (never uploaded)
    rounds_done: int = 0
    version: int = 0                                      # global model version (aggregations so far)
    edge_state: dict = field(default_factory=dict)        # hierarchical: edge server -> its model's global part
    stopped_reason: str = ""


class Simulation:
    """One run of a scenario.

    ``learner`` must offer ``initial_state()``, ``estimate_cost() -> (flops, tokens)``,
    ``num_samples(client)`` and ``run(job)``; by default it is the real
    :class:`~pwffsim.learn.train.Learner` built from the scenario.
    """

    def __init__(self, scenario: Scenario, out_dir: Optional[str] = None, learner: Any = None,
                 executor: Any = None, policy: Optional[AggregationPolicy] = None,
                 on_round: Optional[Callable[[dict], None]] = None):
        self.sc = scenario
        self.env = simpy.Environment()
        self.world = World(scenario, self.env)
        self.cells, self.devices = self.world.cells, self.world.devices
        self.learner = learner if learner is not None else _build_learner(scenario)
        self._own_executor = executor is None
        self.executor = executor if executor is not None else _build_executor(scenario, self.learner)
        fl = scenario.fl
        async_kw = {"fedasync": {"alpha": fl.async_alpha, "staleness_exponent": fl.async_staleness_exponent},
                    "fedbuff": {"buffer_size": fl.buffer_size, "server_lr": fl.server_lr},
                    "semisync": {"period_s": fl.period_s, "server_lr": fl.server_lr},
                    "hierarchical": {"cloud_every": fl.cloud_every}}.get(fl.policy)
        self.policy = policy if policy is not None else make_policy(fl.policy, fl.deadline_s, fl.overcommit, async_kw)
        self.writer = TraceWriter(out_dir) if out_dir is not None else None
        self.events: list[dict] = []
        self.rounds: list[dict] = []
        self.clients: list[dict] = []
        self.final: list[dict] = []
        init = self.learner.initial_state()
        global_groups = set(scenario.pwff.global_groups)
        self.global_keys = [k for k in init if self.learner.parameter_group(k) in global_groups]
        self.personal_keys = [k for k in init if k not in set(self.global_keys)]
        self._initial_personal = {k: init[k] for k in self.personal_keys}
        self.state = RunState(global_state={k: init[k] for k in self.global_keys})
        self.pref_help = client_preferences(scenario)
        self.flops, self.tokens = self.learner.estimate_cost()
        self.selection_rng = stream(scenario.seed, STREAM_SELECTION)
        self.on_round = on_round
        self._in_flight: dict[int, tuple[Transfer, str]] = {}
        self.hierarchical = bool(getattr(self.policy, "hierarchical", False))
        if self.hierarchical:
            topo = self.world.topology
            if topo is None:
                raise ValueError("policy 'hierarchical' needs a topology with edge servers")
            self.edges = sorted({topo.edge_of(c.id) for c in self.cells})
            if self.edges == [topo.cloud]:
                raise ValueError(f"policy 'hierarchical' needs edge servers, but every cell of topology "
                                 f"{scenario.topology} hangs off the cloud")
            self.state.edge_state = {e: dict(self.state.global_state) for e in self.edges}
            self._edge_samples = {e: 0.0 for e in self.edges}
        self._last_loss: dict[int, float] = {}
        self._last_duration: dict[int, float] = {}
        self._proc_client: dict[Any, int] = {}
        from .selection import make_selector

        self.selector = make_selector(fl.selection, **({"threshold_fraction": fl.battery_threshold} if fl.selection == "battery"
                                                       else {"epsilon": fl.oort_epsilon} if fl.selection == "oort" else {}))
        self.availability = load_availability(scenario)
        if scenario.channel.interference and len(self.cells) > 1:
            self._wire_interference()

    # ------------------------------------------------------------------ trace rows
    def _row(self, table: str, **row: Any) -> None:
        {"events": self.events, "rounds": self.rounds, "clients": self.clients, "final": self.final}[table].append(row)
        if self.writer is not None:
            self.writer.add(table, **row)

    def _event(self, r: int, dev: Optional[Device], kind: str, t0: float, t1: float, nbytes: int, rate: float,
               energy: float, status: str, cell: Optional[str] = None, cell_from: str = "") -> None:
        if cell is None:
            cell = "" if dev is None else self.cells[dev.cell].id
        self._row(
            "events", t_start_s=float(t0), t_end_s=float(t1), round=r,
            client=-1 if dev is None else dev.index, cell=cell, cell_from=cell_from,
            kind=kind, bytes=int(nbytes), rate_bps=float(rate), energy_j=float(energy),
            battery_j=math.nan if dev is None else float(dev.battery.level_j), status=status,
        )

    def _dropout(self, r: int, dev: Device) -> None:
        dev.alive = False
        dev.t_dropout_s = self.env.now
        self._event(r, dev, "dropout", self.env.now, self.env.now, 0, 0.0, 0.0, "dropped")

    # ------------------------------------------------------------------ client lifecycle
    def _band(self, dev: Device, kind: str) -> SharedBand:
        cell = self.cells[dev.cell]
        return cell.downlink if kind == "download" else cell.uplink

    def _transfer(self, r: int, dev: Device, kind: str, nbytes: int, out: ClientOutcome):
        cell = self.cells[dev.cell]
        direction = "dl" if kind == "download" else "ul"
        if kind == "download":
            snr_p, drain_p, gain = cell.bs_tx_power_w, dev.profile.rx_power_w, dev.dl_gain
        else:
            snr_p, drain_p, gain = dev.profile.tx_power_w, dev.profile.tx_power_w, dev.ul_gain
        tr = Transfer(device=dev.index, bits=8.0 * nbytes, snr_power_w=snr_p, drain_power_w=drain_p,
                      battery=dev.battery, gain=gain, next_change_s=lambda t: dev.next_change_s(direction, t))
        self._in_flight[dev.index] = (tr, kind)
        try:
            yield self._band(dev, kind).start(tr)
        except simpy.Interrupt as stop:
            status = _stop_status(stop)
            if tr.status == "detached":  # stopped during a handover interruption
                tr.status, tr.t_end_s = status, self.env.now
                tr.rate_bps = tr.mean_rate_bps
            else:
                self._band(dev, kind).cancel(tr, status)
        finally:
            self._in_flight.pop(dev.index, None)
        out.energy_j += tr.energy_j
        self._event(r, dev, kind, tr.t_start_s, tr.t_end_s, nbytes, tr.mean_rate_bps, tr.energy_j, tr.status)
        return tr.status

    def _backhaul(self, r: int, dev: Device, src: str, dst: str, nbytes: int):
        """The model part crossing the backhaul graph (latency + bytes over the bottleneck)."""
        t0 = self.env.now
        dt = self.world.topology.transfer_time_s(src, dst, nbytes)
        status = "ok"
        try:
            yield self.env.timeout(dt)
        except simpy.Interrupt as stop:
            status = _stop_status(stop)
        t1 = self.env.now
        self._event(r, dev, "backhaul", t0, t1, nbytes, 8.0 * nbytes / (t1 - t0) if t1 > t0 else 0.0, 0.0, status,
                    cell=dst, cell_from=src)
        return status

    # ------------------------------------------------------------------ mobility and handover
    def _mobility(self, dev: Device):
        """Re-evaluate the device's association every sample step; A3 handover with time-to-trigger."""
        from ..net.links import A3Handover

        env, w, ho_cfg = self.env, self.world, self.sc.handover
        rule = A3Handover(ho_cfg.hysteresis_db, ho_cfg.time_to_trigger_s)
        k = 1
        while True:
            yield env.timeout(max(0.0, k * w.step_s - env.now))
            k += 1
            if not dev.alive:
                return
            xy = w.position(dev.index, env.now)
            if xy is None:
                continue
            target = rule.update(env.now, w.link.rsrp_dbm(dev.index, xy), dev.cell)
            if target is not None:
                yield from self._handover(dev, target)

    def _handover(self, dev: Device, target: int):
        env = self.env
        old = dev.cell
        flight = self._in_flight.get(dev.index)
        moved = None
        if flight is not None:
            tr, kind = flight
            if self._band(dev, kind).detach(tr):
                moved = (tr, kind)
        dev.cell = target
        t0 = env.now
        yield env.timeout(self.sc.handover.interruption_s)
        if moved is not None and moved[0].status == "detached":
            self._band(dev, moved[1]).attach(moved[0], restart=self.sc.handover.in_flight == "restart")
        self._event(self.state.round, dev, "handover", t0, env.now, 0, 0.0, 0.0, "ok",
                    cell=self.cells[target].id, cell_from=self.cells[old].id)

    def _wire_interference(self) -> None:
        """Uplink SINR: each cell's uplink sees the other cells' active uploads (full reuse)."""
        bands = [c.uplink for c in self.cells]
        for j, band in enumerate(bands):
            def psd(t, j=j):
                return sum(other.interference_psd_w_per_hz(
                    lambda tr, tt: self.devices[tr.device].gain(j, "ul", tt), t)
                    for i, other in enumerate(bands) if i != j)
            band.interference_psd = psd

        def poke_others(changed: SharedBand) -> None:
            for b in bands:
                if b is not changed:
                    b.poke()

        for band in bands:
            band.on_membership_change = poke_others

    def _compute(self, r: int, dev: Device, out: ClientOutcome):
        env = self.env
        t_c, e_c = dev.profile.compute_cost(self.flops)
        power = e_c / t_c if t_c > 0 else 0.0
        t0 = env.now
        handle = self.executor.submit(self._job(r, dev.index, out.start_global))
        enough = dev.battery.level_j >= e_c
        try:
            yield env.timeout(t_c if enough else dev.battery.time_to_empty_s(power))
        except simpy.Interrupt as stop:
            e = dev.battery.draw(power * (env.now - t0))
            out.energy_j += e
            status = _stop_status(stop)
            self._event(r, dev, "compute", t0, env.now, 0, 0.0, e, status)
            handle.cancel()
            return status
        if enough:
            e = dev.battery.draw(e_c)
            status = "ok"
            out.handle = handle
        else:
            e = dev.battery.drain_all()
            status = "dropped"
            handle.cancel()
        out.energy_j += e
        self._event(r, dev, "compute", t0, env.now, 0, 0.0, e, status)
        return status

    def _job(self, r: int, client: int, glob: dict):
        """The local update of ``client`` in round ``r``: it starts from the global part it downloaded
        (``glob``) and its own personal part; the proximal term anchors the global part."""
        from ..learn.train import TrainJob

        start = {**glob, **self.state.personal_state.get(client, self._initial_personal)}
        w_help = float(self.pref_help[client])
        return TrainJob(client=client, round=r, seed=training_seed(self.sc.seed, r, client), start_state=start,
                        pref_help=w_help, pref_safe=1.0 - w_help,
                        prox_anchor=glob if (glob and self.sc.pwff.prox_mu > 0) else None)

    def _time_to_next_availability_change(self) -> Optional[float]:
        """Seconds until some device with battery left may come online or into coverage again
        (None: no device will, so the run cannot go on)."""
        now = self.env.now
        t_next = math.inf
        for d in self.devices:
            if not d.alive or d.battery.empty:
                continue
            if self.availability is not None:
                t_next = min(t_next, self.availability.next_change_s(d.index, now))
            if self.world.moving:
                t_next = min(t_next, self.world.next_position_change_s(d.index, now))
        return t_next - now if math.isfinite(t_next) else None

    def _edge_of(self, dev: Device) -> str:
        return self.world.topology.edge_of(self.cells[dev.cell].id)

    def _server_of(self, dev: Device) -> str:
        """Where a device's updates are aggregated: its edge server (hierarchical) or the cloud."""
        return self._edge_of(dev) if self.hierarchical else self.world.topology.cloud

    def _hierarchical_aggregate(self, r: int, arrived: list[int], results: dict):
        """Edge aggregation every round; cloud aggregation over the backhaul every E rounds."""
        from ..learn.aggregate import weighted_mean

        env, topo = self.env, self.world.topology
        for e in self.edges:
            mine = [k for k in arrived if self._edge_of(self.devices[k]) == e]
            if mine and self.global_keys:
                w = [float(results[k].num_samples) for k in mine]
                self.state.edge_state[e] = weighted_mean(
                    [{key: results[k].state[key] for key in self.global_keys} for k in mine], w)
                self._edge_samples[e] += sum(w)
        if not self.policy.cloud_round(r) or not self.global_keys:
            return
        nbytes = self._payload_bytes()
        t0 = env.now
        up = {e: topo.transfer_time_s(e, topo.cloud, nbytes) for e in self.edges}
        yield env.timeout(max(up.values()))
        for e in self.edges:
            self._event(r, None, "backhaul", t0, t0 + up[e], nbytes, 8.0 * nbytes / up[e] if up[e] > 0 else 0.0, 0.0, "ok",
                        cell=topo.cloud, cell_from=e)
        contributing = [e for e in self.edges if self._edge_samples[e] > 0]
        if contributing:
            self.state.global_state = weighted_mean([self.state.edge_state[e] for e in contributing],
                                                    [self._edge_samples[e] for e in contributing])
        t1 = env.now
        down = {e: topo.transfer_time_s(topo.cloud, e, nbytes) for e in self.edges}
        yield env.timeout(max(down.values()))
        for e in self.edges:
            self._event(r, None, "backhaul", t1, t1 + down[e], nbytes, 8.0 * nbytes / down[e] if down[e] > 0 else 0.0,
                        0.0, "ok",
                        cell=e, cell_from=topo.cloud)
            self.state.edge_state[e] = dict(self.state.global_state)
            self._edge_samples[e] = 0.0

    def _go_offline(self, proc, delay_s: float):
        """Stop a client's round when its device goes offline (availability trace)."""
        yield self.env.timeout(delay_s)
        if proc.is_alive:
            self._event(self.state.round, self.devices[self._proc_client[proc]], "offline", self.env.now,
                        self.env.now, 0, 0.0, 0.0, "offline")
            proc.interrupt("offline")

    def _selection_context(self, r: int, candidates: list[int]):
        from ..net.channel import uplink_rate_bps
        from .selection import SelectionContext

        now = self.env.now
        rate = {}
        for k in candidates:
            dev = self.devices[k]
            cell = self.cells[dev.cell]
            b = cell.uplink.bandwidth_hz / max(1, self.sc.fl.clients_per_round)
            rate[k] = uplink_rate_bps(b, dev.profile.tx_power_w, self.world.large_scale_gain(k, dev.cell, now),
                                      cell.uplink.noise_density_w_per_hz)
        return SelectionContext(
            round=r, t_s=now, expected_rate_bps=rate,
            battery_j={k: self.devices[k].battery.level_j for k in candidates},
            battery_capacity_j={k: self.devices[k].battery.capacity_j for k in candidates},
            num_samples={k: int(self.learner.num_samples(k)) for k in candidates},
            last_loss={k: self._last_loss[k] for k in candidates if k in self._last_loss},
            last_duration_s={k: self._last_duration[k] for k in candidates if k in self._last_duration},
        )

    def _last_loss_duration(self, k: int, out: "ClientOutcome", t_start: float) -> None:
        if out.status == "ok":
            self._last_duration[k] = out.t_arrival_s - t_start
        if out.handle is not None:
            res = out.handle.result()
            self._last_loss[k] = float(res.train_loss)

    def _client_round(self, r: int, dev: Device, down_bytes: int, up_bytes: int):
        start = (self.state.edge_state[self._edge_of(dev)] if self.hierarchical else self.state.global_state)
        out = ClientOutcome(client=dev.index, start_global=start, start_version=self.state.version,
                            t_start_s=self.env.now)
        # Nothing global (local-only): nothing to download or upload.
        phases = ("download", "compute", "upload") if down_bytes > 0 else ("compute",)
        topo = self.world.topology
        if topo is not None and down_bytes > 0:
            phases = ("backhaul-down", *phases, "backhaul-up")
        for phase in phases:
            if phase == "compute":
                status = yield from self._compute(r, dev, out)
            elif phase == "backhaul-down":
                status = yield from self._backhaul(r, dev, self._server_of(dev), self.cells[dev.cell].id, down_bytes)
            elif phase == "backhaul-up":
                status = yield from self._backhaul(r, dev, self.cells[dev.cell].id, self._server_of(dev), up_bytes)
            else:
                status = yield from self._transfer(r, dev, phase, down_bytes if phase == "download" else up_bytes, out)
            if phase == "download":
                out.downloaded = status == "ok"  # (no download at all: not counted)
            if status != "ok":
                out.status = status
                if status == "dropped":
                    self._dropout(r, dev)
                return out
        out.t_arrival_s = self.env.now
        return out

    # ------------------------------------------------------------------ server
    def _server(self):
        from ..learn.aggregate import weighted_mean

        env = self.env
        sc = self.sc
        r = -1
        while r + 1 < sc.fl.rounds:
            r += 1
            self.state.round = r
            alive = [d.index for d in self.devices
                     if d.alive and not d.battery.empty and self.world.available(d.index, env.now)
                     and (self.availability is None or self.availability.online(d.index, env.now))]
            if not alive:
                wait_s = self._time_to_next_availability_change()
                if wait_s is None:
                    self.state.stopped_reason = f"no device with battery left before round {r}"
                    break
                yield env.timeout(wait_s)  # every device is offline or out of coverage for now
                r -= 1  # the round has not happened yet
                continue
            k_round = sc.fl.clients_per_round
            selected = self.selector.select(self.selection_rng, alive, self.policy.num_to_select(k_round),
                                            self._selection_context(r, alive))
            t_start = env.now
            nbytes = self._payload_bytes()
            procs = {k: env.process(self._client_round(r, self.devices[k], nbytes, nbytes)) for k in selected}
            self._proc_client = {p: k for k, p in procs.items()}
            if self.availability is not None:
                for k in selected:
                    t_off = self.availability.online_until_s(k, env.now)
                    if math.isfinite(t_off):
                        env.process(self._go_offline(procs[k], t_off - env.now))
            deadline = self.policy.deadline_s(r)
            need = self.policy.num_to_aggregate(k_round, len(selected))
            deadline_ev = env.timeout(deadline) if deadline is not None else None
            pending = set(selected)
            arrivals: list[tuple[float, int]] = []
            while pending:
                # Fresh conditions each time: SimPy detaches a nested condition once its parent has fired.
                waits = [procs[k] for k in sorted(pending)] + ([deadline_ev] if deadline_ev is not None else [])
                yield simpy.AnyOf(env, waits)
                for k in sorted(pending):
                    if not procs[k].is_alive:
                        pending.discard(k)
                        if procs[k].value.status == "ok":
                            arrivals.append((procs[k].value.t_arrival_s, k))
                if (deadline_ev is not None and deadline_ev.processed) or (need is not None and len(arrivals) >= need):
                    break
            for k in sorted(pending):
                procs[k].interrupt("deadline")
            if pending:
                yield simpy.AllOf(env, [procs[k] for k in sorted(pending)])
            outcomes: dict[int, ClientOutcome] = {k: p.value for k, p in procs.items()}
            if need is not None and len(arrivals) > need:
                # More arrived at the same instant than are needed: the first `need` by (time, id) count.
                for _, k in sorted(arrivals)[need:]:
                    outcomes[k].status = "late"
            for k, o in outcomes.items():
                self._last_loss_duration(k, o, t_start)

            t_agg = env.now
            yield env.timeout(sc.fl.aggregation_time_s)
            results = {k: o.handle.result() for k, o in sorted(outcomes.items()) if o.handle is not None}
            arrived = [k for k in sorted(outcomes) if outcomes[k].status == "ok"]
            # Personal parts stay on the device: every client that finished computing keeps its own.
            for k, res in results.items():
                self.state.personal_state[k] = {key: res.state[key] for key in self.personal_keys}
            train_loss = math.nan
            if self.hierarchical:
                yield from self._hierarchical_aggregate(r, arrived, results)
            if arrived:
                weights = [float(results[k].num_samples) for k in arrived]
                if self.global_keys and not self.hierarchical:
                    self.state.global_state = weighted_mean(
                        [{key: results[k].state[key] for key in self.global_keys} for k in arrived], weights)
                train_loss = float(np.dot(weights, [results[k].train_loss for k in arrived]) / sum(weights))
            trained = [results[k] for k in sorted(results)]
            objective = float(np.mean([res.objective for res in trained])) if trained else math.nan
            self._event(r, None, "aggregate", t_agg, env.now, nbytes * len(arrived), 0.0, 0.0, "ok")

            n_dl_ok = sum(o.downloaded for o in outcomes.values())
            energy_round = sum(o.energy_j for o in outcomes.values())
            self._row(
                "rounds", round=r, t_start_s=float(t_start), t_end_s=float(env.now), selected=len(selected),
                aggregated=len(arrived), late=sum(o.status == "late" for o in outcomes.values()),
                dropped=sum(o.status == "dropped" for o in outcomes.values()),
                offline=sum(o.status == "offline" for o in outcomes.values()), bytes_up=nbytes * len(arrived),
                bytes_down=nbytes * n_dl_ok, energy_j=float(energy_round), train_loss=train_loss,
                objective=objective,
            )
            for k in sorted(outcomes):
                self._client_row(r, outcomes[k], results.get(k), 0 if outcomes[k].status == "ok" else -1,
                                 outcomes[k].energy_j)
            self.state.rounds_done = r + 1
            self.state.version = r + 1
            if self.writer is not None:
                self.writer.flush()
            if self.on_round is not None:
                self.on_round(self.rounds[-1])

    def _client_row(self, r: int, out: ClientOutcome, res: Any, staleness: int, energy_j: float) -> None:
        """One row of the clients table (metrics NaN where the client did not finish computing)."""
        def metric(name: str) -> float:
            return math.nan if res is None else float(getattr(res, name))

        k = out.client
        self._row("clients", round=r, client=k, train_loss=metric("train_loss"), eval_loss=metric("eval_loss"),
                  eval_loss_others=metric("eval_loss_others"), reward_help=metric("reward_help"),
                  reward_safe=metric("reward_safe"), objective=metric("objective"), w_help=float(self.pref_help[k]),
                  staleness=int(staleness), battery_j=float(self.devices[k].battery.level_j),
                  energy_j=float(energy_j), status=out.status)

    def _final_evaluation(self) -> None:
        """Evaluate every client's final model: the global part and its own personal part."""
        trained = {}
        for row in self.clients:
            if not math.isnan(row["train_loss"]):
                trained[row["client"]] = trained.get(row["client"], 0) + 1
        for dev in self.devices:
            k = dev.index
            state = {**self.state.global_state, **self.state.personal_state.get(k, self._initial_personal)}
            w_help = float(self.pref_help[k])
            m = self.learner.evaluate_metrics(state, k, w_help, 1.0 - w_help)
            self._row("final", client=k, w_help=w_help, trained_rounds=trained.get(k, 0),
                      eval_loss=float(m["eval_loss"]), eval_loss_others=float(m["eval_loss_others"]),
                      reward_help=float(m["reward_help"]), reward_safe=float(m["reward_safe"]),
                      objective=float(m["objective"]))

    def _server_async(self):
        """Asynchronous server: keep ``clients_per_round`` devices training; aggregate buffered updates
        when the policy says so (after each arrival, every M arrivals, or every period), each with its
        staleness; a freed slot is refilled at once with the global version of that moment."""
        env, sc, pol = self.env, self.sc, self.policy
        nbytes = self._payload_bytes()
        done = simpy.Store(env)
        busy: dict[int, Any] = {}
        buffer: list[tuple[ClientOutcome, Any, float]] = []   # (outcome, result, t_arrival)
        finished: list[ClientOutcome] = []
        t_window = env.now
        r = 0
        self.state.round = 0

        def client(k: int):
            out = yield from self._client_round(self.state.round, self.devices[k], nbytes, nbytes)
            yield done.put((k, out))

        def refill() -> None:
            cands = [d.index for d in self.devices if d.index not in busy and d.alive and not d.battery.empty
                     and self.world.available(d.index, env.now)
                     and (self.availability is None or self.availability.online(d.index, env.now))]
            free = sc.fl.clients_per_round - len(busy)
            if free <= 0 or not cands:
                return
            for k in self.selector.select(self.selection_rng, cands, free, self._selection_context(self.state.round, cands)):
                busy[k] = env.process(client(k))
                self._proc_client[busy[k]] = k
                if self.availability is not None:
                    t_off = self.availability.online_until_s(k, env.now)
                    if math.isfinite(t_off):
                        env.process(self._go_offline(busy[k], t_off - env.now))

        next_period = env.now + pol.period_s if pol.period_s else math.inf
        while r < sc.fl.rounds:
            refill()
            flush = False
            if not busy:
                wait_s = self._time_to_next_availability_change()
                if buffer:
                    flush = True  # nothing more can arrive now: aggregate what is buffered
                elif wait_s is None:
                    self.state.stopped_reason = f"no device with battery left before aggregation {r}"
                    break
                else:
                    yield env.timeout(wait_s)  # every device is offline or out of coverage for now
                    continue
            get = done.get() if not flush else None
            if get is not None:
                while next_period <= env.now + 1e-12:  # periods that passed during an aggregation are skipped
                    next_period += pol.period_s
                waits = [get] + ([env.timeout(next_period - env.now)] if math.isfinite(next_period) else [])
                yield simpy.AnyOf(env, waits)
                if get.triggered:
                    k, out = get.value
                    busy.pop(k, None)
                    finished.append(out)
                    self._last_loss_duration(k, out, out.t_start_s)
                    if out.handle is not None:
                        res = out.handle.result()
                        self.state.personal_state[k] = {key: res.state[key] for key in self.personal_keys}
                        if out.status == "ok":
                            buffer.append((out, res, out.t_arrival_s))
                else:
                    get.cancel()
            periodic_due = env.now >= next_period - 1e-12
            if periodic_due:
                next_period += pol.period_s
            if not (flush or (buffer and pol.ready(len(buffer))) or periodic_due):
                continue
            # ---- aggregate the buffer
            t_agg = env.now
            yield env.timeout(sc.fl.aggregation_time_s)
            taus = [self.state.version - o.start_version for o, _, _ in buffer]
            if buffer and self.global_keys:
                self.state.global_state = pol.aggregate(
                    self.state.global_state,
                    [{key: o.start_global[key] for key in self.global_keys} for o, _, _ in buffer],
                    [{key: res.state[key] for key in self.global_keys} for _, res, _ in buffer],
                    [float(res.num_samples) for _, res, _ in buffer], taus)
            self._event(r, None, "aggregate", t_agg, env.now, nbytes * len(buffer), 0.0, 0.0, "ok")
            weights = [float(res.num_samples) for _, res, _ in buffer]
            train_loss = (float(np.dot(weights, [res.train_loss for _, res, _ in buffer]) / sum(weights))
                          if buffer else math.nan)
            trained = [o for o in finished if o.handle is not None]
            objective = (float(np.mean([o.handle.result().objective for o in trained])) if trained else math.nan)
            self._row("rounds", round=r, t_start_s=float(t_window), t_end_s=float(env.now),
                      selected=len(finished), aggregated=len(buffer),
                      late=sum(o.status == "late" for o in finished),
                      dropped=sum(o.status == "dropped" for o in finished),
                      offline=sum(o.status == "offline" for o in finished),
                      bytes_up=nbytes * len(buffer), bytes_down=nbytes * sum(o.downloaded for o in finished),
                      energy_j=float(sum(o.energy_j for o in finished)), train_loss=train_loss,
                      objective=objective)
            stale = {id(o): tau for (o, _, _), tau in zip(buffer, taus)}
            for o in sorted(finished, key=lambda o: o.client):
                self._client_row(r, o, o.handle.result() if o.handle is not None else None, stale.get(id(o), -1),
                                 o.energy_j)
            buffer, finished = [], []
            t_window = env.now
            r += 1
            self.state.version += 1
            self.state.round = r
            self.state.rounds_done = r
            if self.writer is not None:
                self.writer.flush()
            if self.on_round is not None:
                self.on_round(self.rounds[-1])
        # Devices still training when the run ends are stopped (their work is not aggregated).
        for proc in list(busy.values()):
            if proc.is_alive:
                proc.interrupt("deadline")

    def _payload_bytes(self) -> int:
        """Bytes of the global part: what is broadcast and what each client uploads (dtype-aware)."""
        from ..learn.aggregate import state_nbytes

        return state_nbytes(self.state.global_state)

    def run(self) -> dict:
        try:
            server = self.env.process(self._server_async() if getattr(self.policy, "asynchronous", False)
                                      else self._server())
            if self.world.moving and len(self.cells) > 1:
                for dev in self.devices:
                    self.env.process(self._mobility(dev))
            self.env.run(until=server)
        finally:
            if self._own_executor:
                self.executor.close()
        self._final_evaluation()
        summary = self.summary()
        if self.writer is not None:
            self.writer.close(summary)
        return summary

    def summary(self) -> dict:
        rounds = self.rounds
        finite = [r["train_loss"] for r in rounds if not math.isnan(r["train_loss"])]
        return {
            "scenario": self.sc.name,
            "seed": self.sc.seed,
            "rounds": len(rounds),
            "stopped_reason": self.state.stopped_reason,
            "simulated_time_s": rounds[-1]["t_end_s"] if rounds else 0.0,
            "total_device_energy_j": float(sum(e["energy_j"] for e in self.events)),
            "bytes_up": int(sum(r["bytes_up"] for r in rounds)),
            "bytes_down": int(sum(r["bytes_down"] for r in rounds)),
            "aggregated_updates": int(sum(r["aggregated"] for r in rounds)),
            "late": int(sum(r["late"] for r in rounds)),
            "dropped": int(sum(r["dropped"] for r in rounds)),
            "offline": int(sum(r["offline"] for r in rounds)),
            "first_train_loss": finite[0] if finite else None,
            "final_train_loss": finite[-1] if finite else None,
            "training_flops_per_update": float(self.flops),
            "scheme": self.sc.pwff.scheme,
            "payload_bytes_per_transfer": int(self._payload_bytes()),
            "final_objective_mean": float(np.mean([f["objective"] for f in self.final])) if self.final else None,
            "final_eval_loss_mean": float(np.mean([f["eval_loss"] for f in self.final])) if self.final else None,
            "final_personalization_gap_mean": (
                float(np.mean([f["eval_loss_others"] - f["eval_loss"] for f in self.final])) if self.final else None),
            "devices_alive": int(sum(d.alive for d in self.devices)),
        }


def _stop_status(stop: simpy.Interrupt) -> str:
    """Status of an activity stopped by the server (deadline, over-selection) or by going offline."""
    return "offline" if stop.cause == "offline" else "late"


def load_availability(sc: Scenario):
    if sc.fl.availability is None:
        return None
    from ..net.availability import read_availability_csv, read_fedscale_behaviour_json

    path = sc.fl.availability
    return read_fedscale_behaviour_json(path) if path.endswith(".json") else read_availability_csv(path)


def client_preferences(sc: Scenario) -> np.ndarray:
    """w_help of every client (w_safe = 1 - w_help), from the scenario's preference rule."""
    pw = sc.pwff
    n = sc.devices.count
    if pw.preference == "explicit":
        return np.asarray(pw.w_help_per_client, dtype=float)
    if pw.preference == "fixed":
        return np.full(n, pw.w_help)
    return stream(sc.seed, STREAM_PREFERENCE).uniform(0.0, 1.0, size=n)


def learner_specs(sc: Scenario):
    from ..learn.data import DataSpec
    from ..learn.model import ModelSpec
    from ..learn.train import TrainSpec

    m, d, f, pw = sc.model, sc.data, sc.fl, sc.pwff
    model_spec = ModelSpec(source=m.source, lora_rank=m.lora_rank, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
                           target_modules=tuple(m.target_modules) if m.target_modules else None, seed=sc.seed,
                           adapter_size=m.adapter_size, gguf_file=m.gguf_file)
    data_spec = DataSpec(num_clients=sc.devices.count, train_samples_per_client=d.train_samples_per_client,
                         eval_samples_per_client=d.eval_samples_per_client, num_topics=d.num_topics,
                         dirichlet_alpha=d.dirichlet_alpha, seed=sc.seed)
    train_spec = TrainSpec(local_steps=f.local_steps, batch_size=f.batch_size, seq_len=f.seq_len,
                           learning_rate=f.learning_rate, eval_batches=f.eval_batches, prox_mu=pw.prox_mu,
                           align_steps=pw.align_steps, align_prompts=pw.align_prompts, align_samples=pw.align_samples,
                           align_max_new_tokens=pw.align_max_new_tokens, align_learning_rate=pw.align_learning_rate,
                           metric_prompts=pw.metric_prompts, help_reward=pw.help_reward, safe_reward=pw.safe_reward)
    return model_spec, data_spec, train_spec


def _build_learner(sc: Scenario):
    from ..learn.train import Learner

    return Learner(*learner_specs(sc), torch_threads=sc.execution.torch_threads)


def _build_executor(sc: Scenario, learner: Any):
    from .executor import InProcessExecutor, ProcessPoolExecutor

    if sc.execution.executor == "process":
        return ProcessPoolExecutor(*learner_specs(sc), torch_threads=sc.execution.torch_threads,
                                   workers=sc.execution.workers)
    return InProcessExecutor(learner)
