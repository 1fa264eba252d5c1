"""Command line: ``pwffsim run | compare | validate | plot | pretrain``.

Bad input (a malformed scenario, an unknown override, a missing run directory) prints one line,
``pwffsim: error: <file>: field '<path>': <what was expected>; given <value>``, and exits with status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


def _fail(msg: str) -> int:
    print(f"pwffsim: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _load(args: argparse.Namespace):
    from .scenario import load_scenario

    return load_scenario(getattr(args, "scenario", None), overrides=getattr(args, "set", None) or [],
                         seed=getattr(args, "seed", None))


def cmd_validate(args: argparse.Namespace) -> int:
    from .scenario import ScenarioError, dump_scenario_toml, reference_rows

    if args.reference:
        for key, tname, default, desc in reference_rows():
            print(f"{key:42s} {tname:18s} {default:22s} {desc}")
        return 0
    if args.scenario is None:
        return _fail("validate needs a SCENARIO file (or --reference)")
    try:
        sc = _load(args)
        # Files the scenario names are checked too (network side only: no torch).
        n_cells = len(sc.cells)
        if sc.topology is not None:
            from .net.topology import load_topology

            n_cells = len(load_topology(sc.topology).base_stations)
        if sc.mobility.model == "trace":
            from .net.mobility import load_trace

            load_trace(sc.mobility.trace, sc.mobility.trace_format, sc.mobility.activity)
        from .scenario import preflight  # what run would reject, and the estimate (torch-free)

        preflight.check(sc, str(args.scenario))
        est = preflight.estimate(sc)
    except ValueError as err:  # ScenarioError, TopologyError, MobilityError
        return _fail(str(err).splitlines()[0])
    avail = preflight.available_memory_bytes()
    if avail is not None and est["bytes"]["total"] > avail:
        return _fail(f"{args.scenario}: estimated memory {est['bytes']['total'] / 2**20:.0f} MB exceeds the "
                     f"machine's available {avail / 2**20:.0f} MB ({preflight.estimate_line(est)})")
    if args.resolved:
        print(dump_scenario_toml(sc), end="")
    else:
        print(f"{args.scenario}: ok ({sc.devices.count} devices, {n_cells} cells, {sc.fl.rounds} rounds)")
        print(preflight.estimate_line(est))
    return 0


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _format_summary(summary: dict) -> str:
    rows = [
        ("rounds", summary["rounds"]),
        ("simulated time (s)", f"{summary['simulated_time_s']:.4f}"),
        ("device energy (J)", f"{summary['total_device_energy_j']:.4f}"),
        ("bytes up / down", f"{summary['bytes_up']} / {summary['bytes_down']}"),
        ("updates aggregated", summary["aggregated_updates"]),
        ("late / dropped", f"{summary['late']} / {summary['dropped']}"),
        ("train loss first -> last",
         "n/a" if summary["first_train_loss"] is None
         else f"{summary['first_train_loss']:.4f} -> {summary['final_train_loss']:.4f}"),
    ]
    if summary.get("final_objective_mean") is not None:
        rows.append(("scheme / payload bytes", f"{summary['scheme']} / {summary['payload_bytes_per_transfer']}"))
        rows.append(("final personalized objective", f"{summary['final_objective_mean']:.4f} (mean over devices)"))
        rows.append(("  base / always refuse", " / ".join(_fmt(summary.get(k)) for k in (
            "reference_objective_base_mean", "reference_objective_always_refuse_mean"))))
        rows.append(("personalization gap (loss)", _fmt(summary.get("final_personalization_gap_mean"))))
    if summary.get("stopped_reason"):
        rows.append(("stopped early", summary["stopped_reason"]))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def cmd_run(args: argparse.Namespace) -> int:
    from .scenario import ScenarioError, dump_scenario_toml

    try:
        sc = _load(args)
    except ScenarioError as err:
        return _fail(str(err))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _fail(f"{out}: --out must be a directory")
    try:
        from tqdm import tqdm

        from .sim.engine import Simulation

        bar = tqdm(total=sc.fl.rounds, desc=f"{sc.name} rounds", unit="round", disable=args.quiet or None,
                   file=sys.stderr)

        def on_round(row: dict) -> None:
            bar.update(1)
            bar.set_postfix(t_s=f"{row['t_end_s']:.2f}", loss=f"{row['train_loss']:.3f}")

        out.mkdir(parents=True, exist_ok=True)
        (out / "scenario.resolved.toml").write_text(dump_scenario_toml(sc))
        sim = Simulation(sc, out_dir=str(out), on_round=on_round)
        summary = sim.run()
        bar.close()
    except (ValueError, OSError) as err:
        # e.g. a model checkpoint directory that cannot be loaded: one line, status 2.
        return _fail(str(err).splitlines()[0] if str(err) else err.__class__.__name__)
    print(f"pwffsim: {sc.name} (seed {sc.seed}) -> {out}")
    print(_format_summary(summary))
    if args.plot:
        from .report import plot_run

        paths = plot_run(out)
        print(f"  plots: {', '.join(p.name for p in paths)} in {paths[0].parent if paths else out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .report import plot_run

    try:
        paths = plot_run(args.run_dir, args.out)
    except FileNotFoundError as err:
        return _fail(str(err))
    for p in paths:
        print(p)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import parse_seeds, policy_overrides, run_compare
    from .scenario import ScenarioError, load_scenario

    try:
        seeds = parse_seeds(args.seeds)
        for spec in args.policy:
            load_scenario(args.scenario, overrides=[*(args.set or []), *policy_overrides(spec)])
    except (ValueError, ScenarioError) as err:
        return _fail(str(err).splitlines()[0])
    total = len(seeds) * len(args.policy)
    done = [0]

    def progress(spec: str, seed: int) -> None:
        done[0] += 1
        if not args.quiet:
            print(f"  [{done[0]}/{total}] {spec} seed {seed}", file=sys.stderr)

    try:
        res = run_compare(args.scenario, args.policy, seeds, args.out, overrides=args.set or [],
                          target_loss=args.target_loss, progress=progress)
    except (ValueError, OSError) as err:
        return _fail(str(err).splitlines()[0])
    print(res["markdown"], end="")
    print(f"tables and plots in {args.out}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .learn.pretrain import pretrain_base

    path = pretrain_base(args.out_dir, args.size, steps=args.steps, seed=args.seed)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pwffsim", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a scenario (default: the built-in one)")
    r.add_argument("scenario", nargs="?", default=None, help="scenario TOML file (omit: built-in default)")
    r.add_argument("--out", default="runs/latest", help="output directory for traces (default runs/latest)")
    r.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a knob, e.g. --set fl.rounds=3")
    r.add_argument("--no-plot", dest="plot", action="store_false", help="do not write PNG plots")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate", help="check a scenario file")
    v.add_argument("scenario", nargs="?", default=None)
    v.add_argument("--set", action="append", metavar="KEY=VALUE")
    v.add_argument("--resolved", action="store_true", help="print the scenario with every default filled in")
    v.add_argument("--reference", action="store_true", help="print every knob with its type, default and unit")
    v.set_defaults(func=cmd_validate)

    pl = sub.add_parser("plot", help="write PNG plots of a run directory")
    pl.add_argument("run_dir")
    pl.add_argument("--out", default=None, help="plot directory (default RUN_DIR/plots)")
    pl.set_defaults(func=cmd_plot)

    c = sub.add_parser("compare", help="run aggregation policies on the same seeds (common random numbers)")
    c.add_argument("scenario", nargs="?", default=None)
    c.add_argument("--policy", action="append", required=True,
                   help="NAME[:P1[,P2]][@SELECTOR], e.g. sync, deadline:0.5, overselect:0.3,2.0@oort, fedavgm:0.9 (repeat)")
    c.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2,5")
    c.add_argument("--out", default="runs/compare")
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.add_argument("--target-loss", type=float, default=None,
                   help="default: the largest of the runs' best losses (every run reaches it)")
    c.add_argument("--quiet", action="store_true")
    c.set_defaults(func=cmd_compare)

    pt = sub.add_parser("pretrain", help="pre-train a built-in base model on the generated statements")
    pt.add_argument("out_dir")
    pt.add_argument("--size", choices=("tiny", "small"), default="tiny",
                    help="tiny: builtin-tiny's recipe (125 k parameters); small: builtin-small's (3.26 M)")
    pt.add_argument("--steps", type=int, default=None, help="default: the recipe's")
    pt.add_argument("--seed", type=int, default=0)
    pt.set_defaults(func=cmd_pretrain)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
