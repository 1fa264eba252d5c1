"""SHA-256 of the traces (events, rounds, clients, final, links, summary) of the default scenario, every example
scenario and a short run of every policy and selector (seed 0).

A refactor must not change a single byte of what a run writes.  Record the hashes before it, check
them after:

    python benchmarks/trace_hashes.py --record benchmarks/trace_hashes.json   # before
    python benchmarks/trace_hashes.py --check  benchmarks/trace_hashes.json   # after (exit 1 on a change)

A change that is meant to alter the traces (a bug fix, a new column) records the file again in the
same commit and says why.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("events.csv", "rounds.csv", "clients.csv", "final.csv", "links.csv", "summary.json")


# Beyond the examples: every aggregation policy and selector on a short default run, so the round
# loops' variants are covered too (name -> --set overrides).
_SHORT = ["fl.rounds=3", "devices.count=8", "fl.clients_per_round=4", "data.train_samples_per_client=16"]
VARIANTS = {
    "policy/deadline": ["fl.policy='deadline'", "fl.deadline_s=0.145"],
    "policy/overselect": ["fl.policy='overselect'", "fl.overcommit=0.5"],
    "policy/fedasync": ["fl.policy='fedasync'"],
    "policy/fedbuff": ["fl.policy='fedbuff'", "fl.buffer_size=2"],
    "policy/semisync": ["fl.policy='semisync'", "fl.period_s=0.1"],
    "selection/oort": ["fl.selection='oort'"],
    "selection/battery": ["fl.selection='battery'"],
    "selection/channel": ["fl.selection='channel'"],
    "scheme/fedavg-all": ["pwff.scheme='fedavg-all'"],
    "scheme/local-only": ["pwff.scheme='local-only'"],
    "scheme/fedrep": ["pwff.scheme='fedrep'"],
    "scheme/ditto": ["pwff.scheme='ditto'"],
    "data/divergence": ["data.preference_divergence=1.0"],
    "train/sgd-kl": ["fl.optimizer='sgd'", "pwff.align_kl_coef=0.1"],
}


def scenarios() -> list[tuple[str, str | None, list[str]]]:
    """(name, path, overrides) of the built-in default scenario (path None), every shipped example and
    the policy / selector variants."""
    examples = sorted((ROOT / "topologies" / "examples").glob("*.toml")) + sorted(
        (ROOT / "traces" / "examples").glob("*.toml"))
    return ([("default", None, [])] + [(f"{p.parent.parent.name}/{p.stem}", str(p), []) for p in examples]
            + [(name, None, _SHORT + sets) for name, sets in VARIANTS.items()])


def hashes_of(path: str | None, overrides: list[str]) -> dict[str, str]:
    from pwffsim.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        args = (["run"] + ([path] if path else []) + ["--out", tmp, "--seed", "0", "--no-plot", "--quiet"]
                + [a for o in overrides for a in ("--set", o)])
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(args)
        if rc != 0:
            raise SystemExit(f"trace_hashes: run failed: {' '.join(args)}")
        return {t: hashlib.sha256((Path(tmp) / t).read_bytes()).hexdigest() for t in TABLES}


def all_hashes(only: list[str]) -> dict[str, dict[str, str]]:
    out = {}
    for name, path, overrides in scenarios():
        if only and name not in only:
            continue
        out[name] = hashes_of(path, overrides)
        print(f"{name:40s} " + " ".join(h[:12] for h in out[name].values()), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", metavar="JSON")
    mode.add_argument("--check", metavar="JSON")
    ap.add_argument("--only", action="append", default=[], help="scenario name (repeatable)")
    args = ap.parse_args()
    if args.record:
        Path(args.record).write_text(json.dumps(all_hashes(args.only), indent=2, sort_keys=True) + "\n")
        return 0
    want = json.loads(Path(args.check).read_text())
    got = all_hashes(args.only or sorted(want))
    bad = [f"{s}/{t}" for s in got for t in TABLES if got[s][t] != want.get(s, {}).get(t)]
    missing = sorted(set(want) - set(got)) if not args.only else []
    for b in bad:
        print(f"CHANGED: {b}")
    for m in missing:
        print(f"NOT RUN: {m}")
    print("byte-identical" if not bad and not missing else f"{len(bad)} table(s) changed")
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main())
