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

from ..net.channel import BlockFading, dbm_to_w, db_to_linear, draw_shadowing_db, path_loss_db
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
    """Plain per-device state (what a checkpoint needs: battery level, alive flag, links)."""

    index: int
    profile: DeviceProfile
    position_m: np.ndarray
    cell: int
    battery: Battery
    large_scale_gain: float  # linear, path loss and shadowing towards its cell
    ul_fading: BlockFading
    dl_fading: BlockFading
    alive: bool = True
    t_dropout_s: float = math.nan

    def ul_gain(self, t: float) -> float:
        return self.large_scale_gain * self.ul_fading.gain(t)

    def dl_gain(self, t: float) -> float:
        return self.large_scale_gain * self.dl_fading.gain(t)


def build_profiles(sc: Scenario) -> list[DeviceProfile]:
    return [
        DeviceProfile(
            name=p.name, flops_per_s=p.throughput_flops_per_s, cpu_hz=p.cpu_hz, flops_per_cycle=p.flops_per_cycle,
            kappa=p.kappa, tx_power_w=dbm_to_w(p.tx_power_dbm), rx_power_w=p.rx_power_w, battery_j=p.battery_j,
        )
        for p in sc.devices.profiles
    ]


def place_devices(sc: Scenario) -> np.ndarray:
    d = sc.devices
    centre = (sc.cells[0].x_m, sc.cells[0].y_m)
    rng = stream(sc.seed, STREAM_PLACEMENT)
    if d.placement == "explicit":
        return np.asarray(d.positions_m, dtype=float).reshape(d.count, 2)
    if d.placement == "disc":
        return place_uniform_disc(rng, d.count, centre, d.radius_m, d.min_distance_m)
    return place_uniform_square(rng, d.count, centre, d.side_m, d.min_distance_m)


def build_world(sc: Scenario, env: simpy.Environment) -> tuple[list[Cell], list[Device]]:
    cells: list[Cell] = []
    for i, c in enumerate(sc.cells):
        n0 = dbm_to_w(c.noise_density_dbm_hz)
        cells.append(Cell(
            index=i, id=c.id, position_m=np.array([c.x_m, c.y_m], dtype=float), bs_tx_power_w=dbm_to_w(c.bs_tx_power_dbm),
            uplink=SharedBand(env, c.uplink_bandwidth_hz, n0, shared=True, name=f"{c.id}/ul"),
            downlink=SharedBand(env, c.downlink_bandwidth_hz, n0, shared=False, name=f"{c.id}/dl"),
        ))
    profiles = build_profiles(sc)
    shares = np.array([p.share for p in sc.devices.profiles], dtype=float)
    prof_idx = stream(sc.seed, STREAM_PROFILE).choice(len(profiles), size=sc.devices.count, p=shares / shares.sum())
    positions = place_devices(sc)
    ch = sc.channel
    devices: list[Device] = []
    for k in range(sc.devices.count):
        # Large-scale gain to every cell; attach to the strongest mean received power.
        sh = draw_shadowing_db(stream(sc.seed, STREAM_SHADOWING, k), ch.shadowing_sigma_db, size=len(cells))
        gains_db = []
        for j, cell in enumerate(cells):
            d_m = float(np.hypot(*(positions[k] - cell.position_m)))
            pl = path_loss_db(ch.path_loss, d_m, sc.cells[j].carrier_hz)
            gains_db.append(-(pl + float(np.atleast_1d(sh)[j])))
        rx_dbm = [sc.cells[j].bs_tx_power_dbm + g for j, g in enumerate(gains_db)]
        j = int(np.argmax(rx_dbm))
        prof = profiles[int(prof_idx[k])]
        devices.append(Device(
            index=k, profile=prof, position_m=positions[k].copy(), cell=j, battery=Battery(prof.battery_j),
            large_scale_gain=float(db_to_linear(gains_db[j])),
            ul_fading=BlockFading(ch.fading, ch.coherence_time_s, stream(sc.seed, STREAM_FADING_UL, k, j), ch.rician_k_db),
            dl_fading=BlockFading(ch.fading, ch.coherence_time_s, stream(sc.seed, STREAM_FADING_DL, k, j), ch.rician_k_db),
        ))
    return cells, devices


# ------------------------------------------------------------------------------------ run


@dataclass
class ClientOutcome:
    client: int
    status: str = "ok"              # ok | late | dropped
    handle: Any = None              # training handle, set once the computation finished
    t_arrival_s: float = math.nan   # when the upload finished
    downloaded: bool = False        # the broadcast arrived in full
    energy_j: float = 0.0


@dataclass
class RunState:
    """Everything a later checkpoint needs, in plain objects."""

    round: int = 0
    global_state: dict = field(default_factory=dict)      # the global part (server's copy)
    personal_state: dict = field(default_factory=dict)    # client -> its personal part (never uploaded)
    rounds_done: int = 0
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
        self.cells, self.devices = build_world(scenario, self.env)
        self.learner = learner if learner is not None else _build_learner(scenario)
        self._own_executor = executor is None
        self.executor = executor if executor is not None else _build_executor(scenario, self.learner)
        self.policy = policy if policy is not None else make_policy(scenario.fl.policy, scenario.fl.deadline_s)
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

    # ------------------------------------------------------------------ trace rows
    def _row(self, table: str, **row: Any) -> None:
        {"events": self.events, "rounds": self.rounds, "clients": self.clients, "final": self.final}[table].append(row)
        if self.writer is not None:
            self.writer.add(table, **row)

    def _event(self, r: int, dev: Optional[Device], kind: str, t0: float, t1: float, nbytes: int, rate: float,
               energy: float, status: str) -> None:
        self._row(
            "events", t_start_s=float(t0), t_end_s=float(t1), round=r,
            client=-1 if dev is None else dev.index, cell="" if dev is None else self.cells[dev.cell].id,
            kind=kind, bytes=int(nbytes), rate_bps=float(rate), energy_j=float(energy),
            battery_j=math.nan if dev is None else float(dev.battery.level_j), status=status,
        )

    def _dropout(self, r: int, dev: Device) -> None:
        dev.alive = False
        dev.t_dropout_s = self.env.now
        self._event(r, dev, "dropout", self.env.now, self.env.now, 0, 0.0, 0.0, "dropped")

    # ------------------------------------------------------------------ client lifecycle
    def _transfer(self, r: int, dev: Device, kind: str, nbytes: int, out: ClientOutcome):
        cell = self.cells[dev.cell]
        if kind == "download":
            band, snr_p, drain_p, gain, nxt = (cell.downlink, cell.bs_tx_power_w, dev.profile.rx_power_w,
                                               dev.dl_gain, dev.dl_fading.next_boundary_s)
        else:
            band, snr_p, drain_p, gain, nxt = (cell.uplink, dev.profile.tx_power_w, dev.profile.tx_power_w,
                                               dev.ul_gain, dev.ul_fading.next_boundary_s)
        tr = Transfer(device=dev.index, bits=8.0 * nbytes, snr_power_w=snr_p, drain_power_w=drain_p,
                      battery=dev.battery, gain=gain, next_change_s=nxt)
        try:
            yield band.start(tr)
        except simpy.Interrupt:
            band.cancel(tr, "late")
        out.energy_j += tr.energy_j
        self._event(r, dev, kind, tr.t_start_s, tr.t_end_s, nbytes, tr.mean_rate_bps, tr.energy_j, tr.status)
        return tr.status

    def _compute(self, r: int, dev: Device, out: ClientOutcome):
        env = self.env
        t_c, e_c = dev.profile.compute_cost(self.flops)
        power = e_c / t_c if t_c > 0 else 0.0
        t0 = env.now
        handle = self.executor.submit(self._job(r, dev.index))
        enough = dev.battery.level_j >= e_c
        try:
            yield env.timeout(t_c if enough else dev.battery.time_to_empty_s(power))
        except simpy.Interrupt:
            e = dev.battery.draw(power * (env.now - t0))
            out.energy_j += e
            self._event(r, dev, "compute", t0, env.now, 0, 0.0, e, "late")
            handle.cancel()
            return "late"
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

    def _job(self, r: int, client: int):
        """The local update of ``client`` in round ``r``: it starts from the global part it downloaded
        and its own personal part; the proximal term anchors the global part."""
        from ..learn.train import TrainJob

        glob = self.state.global_state
        start = {**glob, **self.state.personal_state.get(client, self._initial_personal)}
        w_help = float(self.pref_help[client])
        return TrainJob(client=client, round=r, seed=training_seed(self.sc.seed, r, client), start_state=start,
                        pref_help=w_help, pref_safe=1.0 - w_help,
                        prox_anchor=glob if (glob and self.sc.pwff.prox_mu > 0) else None)

    def _client_round(self, r: int, dev: Device, down_bytes: int, up_bytes: int):
        out = ClientOutcome(client=dev.index)
        # Nothing global (local-only): nothing to download or upload.
        phases = ("download", "compute", "upload") if down_bytes > 0 else ("compute",)
        for phase in phases:
            if phase == "compute":
                status = yield from self._compute(r, dev, out)
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
        for r in range(sc.fl.rounds):
            self.state.round = r
            alive = [d.index for d in self.devices if d.alive and not d.battery.empty]
            if not alive:
                self.state.stopped_reason = f"no device with battery left before round {r}"
                break
            selected = self.policy.select(self.selection_rng, alive, sc.fl.clients_per_round)
            t_start = env.now
            nbytes = self._payload_bytes()
            e0 = {k: self.devices[k].battery.level_j for k in selected}
            procs = {k: env.process(self._client_round(r, self.devices[k], nbytes, nbytes)) for k in selected}
            deadline = self.policy.deadline_s(r)
            if deadline is not None:
                yield simpy.AllOf(env, list(procs.values())) | env.timeout(deadline)
                for p in procs.values():
                    if p.is_alive:
                        p.interrupt("deadline")
            # A fresh condition: SimPy detaches a nested condition once its parent has fired.
            yield simpy.AllOf(env, list(procs.values()))
            outcomes: dict[int, ClientOutcome] = {k: p.value for k, p in procs.items()}

            t_agg = env.now
            yield env.timeout(sc.fl.aggregation_time_s)
            results = {k: o.handle.result() for k, o in sorted(outcomes.items()) if o.handle is not None}
            arrived = [k for k in sorted(outcomes) if outcomes[k].status == "ok"]
            # Personal parts stay on the device: every client that finished computing keeps its own.
            for k, res in results.items():
                self.state.personal_state[k] = {key: res.state[key] for key in self.personal_keys}
            train_loss = math.nan
            if arrived:
                weights = [float(results[k].num_samples) for k in arrived]
                if self.global_keys:
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
                dropped=sum(o.status == "dropped" for o in outcomes.values()), bytes_up=nbytes * len(arrived),
                bytes_down=nbytes * n_dl_ok, energy_j=float(energy_round), train_loss=train_loss,
                objective=objective,
            )
            for k in sorted(outcomes):
                res = results.get(k)
                dev = self.devices[k]
                self._row(
                    "clients", round=r, client=k,
                    train_loss=math.nan if res is None else float(res.train_loss),
                    eval_loss=math.nan if res is None else float(res.eval_loss),
                    eval_loss_others=math.nan if res is None else float(res.eval_loss_others),
                    reward_help=math.nan if res is None else float(res.reward_help),
                    reward_safe=math.nan if res is None else float(res.reward_safe),
                    objective=math.nan if res is None else float(res.objective),
                    w_help=float(self.pref_help[k]),
                    battery_j=float(dev.battery.level_j), energy_j=float(e0[k] - dev.battery.level_j),
                    status=outcomes[k].status,
                )
            self.state.rounds_done = r + 1
            if self.writer is not None:
                self.writer.flush()
            if self.on_round is not None:
                self.on_round(self.rounds[-1])

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

    def _payload_bytes(self) -> int:
        """Bytes of the global part: what is broadcast and what each client uploads (dtype-aware)."""
        from ..learn.aggregate import state_nbytes

        return state_nbytes(self.state.global_state)

    def run(self) -> dict:
        try:
            self.env.process(self._server())
            self.env.run()
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
                           adapter_size=m.adapter_size)
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
