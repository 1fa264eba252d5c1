"""pwffsim's executors against a bare training loop and Flower's simulation engine (a benchmark, not a test).

One workload for every engine: the built-in default scenario's model (builtin-tiny, its LoRA and
adapters, local steps, batch and sequence length), ``--rounds`` rounds x ``--clients`` clients, alignment
and proximal term off (as benchmarks/overhead.py), no final evaluation and, unless ``--metrics``, no
held-out metrics. Every engine runs pwffsim's own local update (``Learner.run``) on the same TrainJobs,
for the same clients each round: those pwffsim's own selection picks (read once from a network-only
pwffsim run of the scenario; the pwffsim engines make their own selection and are checked to train
exactly these). The engines:

* bare loop, 1 process: a plain loop: each round Learner.run per client, then FedAvg of the global part;
* bare loop, 2 processes: the same jobs on 2 spawned processes (each builds its Learner once), a round's
  clients split over the two, then FedAvg (the round barrier kept);
* pwffsim (the whole simulator, traces written): in-process, process pool with 2 workers, and Ray with 2
  workers / batched training of 5 clients if this pwffsim has them;
* Flower 1.42 simulation engine (Ray backend) with 1 and with 2 actors: a ClientApp whose train runs the
  client's job, a ServerApp with Flower's FedAvg over the global part (benchmarks/_flower.py).

Each run is a fresh process (this script in ``--mode ENGINE``), engines interleaved over ``--repeats``
(the order rotated each repeat). Per engine: wall time (min over repeats; process start to end), steady
round (min over repeats of the mean of rounds 2..N, from the round-end timestamps the engine prints),
the time from process start to the end of round 1 (imports, workers, model builds, round 1), peak RSS
summed over the engine's process tree and the largest single process's (sampled with psutil every
50 ms; max over repeats; shared pages are counted in every process mapping them), and the ratio of the
wall time to the bare 1-process loop's. Before the next run starts, every process of the last one must
have exited (Ray's actors outlive their driver by a few seconds; after 30 s they are terminated and the
table says so). Each engine's final global part is compared with the bare loop's (same updates, same
model up to float rounding: the table flags a difference).

    pip install '.[bench]'
    python benchmarks/vs_flower.py [--rounds 20] [--repeats 3] [--metrics] [--engines a,b] [--record]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import _engines as E

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "vs_flower.md"
MARK = "VS-FLOWER-RESULT "


def _flwr_version() -> str:
    try:
        return metadata.version("flwr")
    except metadata.PackageNotFoundError:
        return "(not installed)"


#: engine -> table label, in the table's order (1-process engines first, then the 2-process ones).
ENGINES = {
    "bare1": "bare loop, 1 process",
    "pwffsim-inprocess": "pwffsim, in-process",
    "pwffsim-batched5": "pwffsim, batched (5 clients), in-process",
    "flower1": f"Flower {_flwr_version()} simulation (Ray), 1 actor",
    "bare2": "bare loop, 2 processes",
    "pwffsim-process2": "pwffsim, process pool, 2 workers",
    "pwffsim-ray2": "pwffsim, Ray, 2 workers",
    "pwffsim-process2-batched5": "pwffsim, process pool, 2 workers, batched (up to 5 clients)",
    "flower2": "Flower, 2 actors",
}


# ---------------------------------------------------------------------------- one engine, in its process
def run_mode(engine: str, plan_path: str) -> None:
    """Run one engine on the plan and print its result line (``MARK`` + JSON)."""
    spec = json.loads(Path(plan_path).read_text())
    overrides, plan = spec["overrides"], spec["plan"]
    if engine == "bare1":
        out = E.bare_one(overrides, plan)
    elif engine == "bare2":
        out = E.bare_pool(overrides, plan, workers=2)
    elif engine in E.PWFFSIM_ENGINES:
        out = E.run_pwffsim(overrides, plan, engine)
    elif engine in ("flower1", "flower2"):
        import _flower  # flwr is imported here only (SystemExit naming the extra if it is missing)

        out = _flower.run_flower(overrides, plan, actors=int(engine[-1]))
    else:
        raise SystemExit(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
    print(MARK + json.dumps(out), flush=True)


# ---------------------------------------------------------------------------- measuring a run
class TreeSampler:
    """Samples the RSS of a process and all its descendants every ``period_s`` in a thread: the peak of
    the sum and of the largest process; remembers every process it saw (to wait for them at the end)."""

    def __init__(self, pid: int, period_s: float = 0.05):
        import psutil

        self.psutil, self.root, self.period_s = psutil, psutil.Process(pid), period_s
        self.peak_sum = self.peak_max = 0
        self.seen: dict[int, object] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        ps = self.psutil
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except ps.Error:
            return
        total = biggest = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except ps.Error:
                continue
            self.seen.setdefault(p.pid, p)
            total, biggest = total + rss, max(biggest, rss)
        self.peak_sum, self.peak_max = max(self.peak_sum, total), max(self.peak_max, biggest)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def stop(self, linger_s: float = 30.0) -> int:
        """Stop sampling; wait up to ``linger_s`` for every process seen to exit (Ray's actors outlive
        their driver by a few seconds), then terminate those still there, by pid; returns their count."""
        self._stop.set()
        self._thread.join()
        others = [p for p in self.seen.values() if p.pid != self.root.pid]
        _, alive = self.psutil.wait_procs(others, timeout=linger_s)
        for p in alive:
            p.terminate()
        self.psutil.wait_procs(alive, timeout=5)
        return len(alive)


def measure(engine: str, plan_path: str, log_dir: str, rep: int) -> dict:
    """One run of ``engine`` in a fresh process: wall, peak RSS (tree sum, max process), its result."""
    log = Path(log_dir) / f"{engine}.{rep}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mode", engine, "--plan", plan_path]
    with open(f"{log}.out", "w") as fo, open(f"{log}.err", "w") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe)
        sampler = TreeSampler(proc.pid)
        rc = proc.wait()
        wall = time.perf_counter() - t0
    leftover = sampler.stop()
    lines = [ln for ln in Path(f"{log}.out").read_text().splitlines() if ln.startswith(MARK)]
    if rc != 0 or not lines:
        err = [ln for ln in Path(f"{log}.err").read_text().splitlines() if ln.strip()]
        return {"error": (err[-1] if err else f"exit code {rc}")[:200]}
    out = json.loads(lines[-1][len(MARK):])
    # perf_counter is the system-wide monotonic clock: the child's round ends are on this one's scale
    first = out["round_ends"][0] - t0 if out["round_ends"] else float("nan")
    return {"wall": wall, "first_round": first, "rss_sum": sampler.peak_sum, "rss_max": sampler.peak_max,
            "leftover": leftover, **out}


def steady_round(ends: list[float]) -> float:
    """Mean duration of rounds 2..N from the round-end timestamps (nan with fewer than 2 rounds)."""
    return (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) >= 2 else float("nan")


# ---------------------------------------------------------------------------- the benchmark
def choose_engines(names: list[str], overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """The engines to run, and why others are skipped (a pwffsim executor this pwffsim does not have)."""
    run, skipped = [], {}
    for name in names:
        if name not in ENGINES:
            raise SystemExit(f"unknown engine {name!r}; one of {', '.join(ENGINES)}")
        if name in E.PWFFSIM_ENGINES and not E.supported([*overrides, *E.PWFFSIM_ENGINES[name]]):
            skipped[name] = "skipped: not supported by this pwffsim"
            continue
        run.append(name)
    return run, skipped


def run_all(engines: list[str], plan_path: str, repeats: int) -> dict[str, list[dict]]:
    """Every engine ``repeats`` times, interleaved (the order rotated each repeat). The runs' logs are
    kept (and their directory printed) if one failed."""
    runs: dict[str, list[dict]] = {e: [] for e in engines}
    logs = tempfile.mkdtemp(prefix="vs_flower_logs_")
    for rep in range(repeats):
        order = engines[rep % len(engines):] + engines[:rep % len(engines)]
        for engine in order:
            r = measure(engine, plan_path, logs, rep)
            runs[engine].append(r)
            shown = (f"{r['wall']:.2f} s, steady round {steady_round(r['round_ends']):.3f} s, peak RSS "
                     f"{_mb(r['rss_sum'])}" if "wall" in r else f"FAILED: {r['error']}")
            if r.get("leftover"):
                shown += f" ({r['leftover']} of its processes outlived it by 30 s: terminated)"
            print(f"  repeat {rep + 1}/{repeats} {engine:18s} {shown}", flush=True)
    if any("error" in r for rs in runs.values() for r in rs):
        print(f"logs of every run (ENGINE.REPEAT.out / .err): {logs}")
    else:
        shutil.rmtree(logs, ignore_errors=True)
    return runs


def summarize(runs: dict[str, list[dict]], plan: list[list[dict]]) -> dict[str, dict]:
    """Per engine: min wall, min steady round, max peak RSS; whether it trained the plan's clients and
    the sum |final global part| (the same updates give the same model, up to float rounding)."""
    want = sorted([r, e["client"]] for r, entries in enumerate(plan) for e in entries)
    rows = {}
    for engine, rs in runs.items():
        ok = [r for r in rs if "wall" in r]
        if not ok:
            rows[engine] = {"error": rs[-1]["error"]}
            continue
        rows[engine] = {"wall": min(r["wall"] for r in ok), "steady": min(steady_round(r["round_ends"]) for r in ok),
                        "first_round": min(r["first_round"] for r in ok),
                        "rss_sum": max(r["rss_sum"] for r in ok), "rss_max": max(r["rss_max"] for r in ok),
                        "same_jobs": all(sorted(r["trained"]) == want for r in ok),
                        "global_l1": ok[-1]["global_l1"], "leftover": max(r["leftover"] for r in ok)}
    return rows


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.0f} MB"


def table(rows: dict[str, dict], skipped: dict[str, str]) -> str:
    """The Markdown table: engine | wall | wall / bare | steady round | peak RSS."""
    bare = rows.get("bare1", {}).get("wall")
    ref_l1 = rows.get("bare1", {}).get("global_l1")
    lines = ["| engine | wall | wall / bare loop | steady round | start to end of round 1 "
             "| peak RSS, sum (largest process) |", "|---|---|---|---|---|---|"]
    for engine, label in ENGINES.items():
        if engine in skipped:
            lines.append(f"| {label} | {skipped[engine]} | | | | |")
            continue
        if engine not in rows:
            continue
        row = rows[engine]
        if "error" in row:
            lines.append(f"| {label} | failed: {row['error']} | | | | |")
            continue
        ratio = f"{row['wall'] / bare:.2f}" if bare else "n/a"
        notes = "" if row["same_jobs"] else " (other clients trained!)"
        if row["leftover"]:
            notes += f" ({row['leftover']} processes outlived the run)"
        if ref_l1 and abs(row["global_l1"] - ref_l1) > 1e-3 * abs(ref_l1):
            notes += f" (final model differs: sum|global| {row['global_l1']:.4g} vs {ref_l1:.4g})"
        lines.append(f"| {label}{notes} | {row['wall']:.2f} s | {ratio} | {row['steady']:.3f} s "
                     f"| {row['first_round']:.2f} s | {_mb(row['rss_sum'])} ({_mb(row['rss_max'])}) |")
    return "\n".join(lines)


def describe(args, overrides: list[str], n_updates: int) -> str:
    import platform

    sc = E.scenario(overrides)
    return (f"Workload: built-in default scenario ({sc.model.source}, LoRA rank {sc.model.lora_rank} + adapters of "
            f"size {sc.model.adapter_size}), {args.rounds} rounds x {args.clients} clients ({n_updates} local updates "
            f"of {sc.fl.local_steps} steps, batch {sc.fl.batch_size}, seq_len {sc.fl.seq_len}), metrics "
            f"{'on' if args.metrics else 'off'}, overrides `{' '.join(overrides)}`. Min of {args.repeats} "
            f"interleaved runs, each a fresh process; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"torch {metadata.version('torch')}, flwr {_flwr_version()}.")


NOTES = """Every engine runs pwffsim's `Learner.run` on the same jobs, for the same clients each round (pwffsim's
own selection, read from a network-only run of the scenario); steady round: mean of rounds 2..N; peak
RSS: summed over the engine's process tree (largest single process in brackets), sampled every 50 ms.
How each engine is built: the docstrings of benchmarks/vs_flower.py, _engines.py and _flower.py."""


def record(text: str) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(f"# vs_flower: pwffsim's executors, a bare loop and Flower's simulation engine\n\n"
                       f"`python benchmarks/vs_flower.py {' '.join(sys.argv[1:])}` "
                       f"({time.strftime('%Y-%m-%d')})\n\n{text}\n\n{NOTES}\n")
    print(f"written {RESULTS.relative_to(HERE.parent)}")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=5, help="clients per round")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--metrics", action="store_true", help="held-out metrics on (the scenario's eval_batches, "
                    "metric_prompts) in every engine's local update")
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of: " + ", ".join(ENGINES))
    ap.add_argument("--set", action="append", default=[], help="extra scenario override key=value (repeatable)")
    ap.add_argument("--record", action="store_true", help=f"write the table to {RESULTS.relative_to(HERE.parent)}")
    ap.add_argument("--mode", help=argparse.SUPPRESS)  # internal: run one engine (a child process)
    ap.add_argument("--plan", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.mode:
        return run_mode(args.mode, args.plan)
    try:
        import psutil  # noqa: F401 - the memory sampler
    except ImportError:
        raise SystemExit("vs_flower.py needs psutil: pip install 'pwffsim[bench]'") from None
    overrides = E.workload_overrides(args.rounds, args.clients, args.metrics, args.set)
    engines, skipped = choose_engines([e.strip() for e in args.engines.split(",") if e.strip()], overrides)
    for engine, why in skipped.items():
        print(f"{ENGINES[engine]}: {why}")
    plan = E.make_plan(overrides)
    with tempfile.TemporaryDirectory(prefix="vs_flower_plan_") as tmp:
        plan_path = str(Path(tmp) / "plan.json")
        Path(plan_path).write_text(json.dumps({"overrides": overrides, "plan": plan}))
        rows = summarize(run_all(engines, plan_path, args.repeats), plan)
    text = describe(args, overrides, sum(map(len, plan))) + "\n\n" + table(rows, skipped)
    print("\n" + text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
