"""Numerical comparison of two trees' traces: for a change meant to alter only floating-point round-off.

``trace_hashes.py`` asks for byte-identical traces; a change that reorders floating-point sums (a
vectorised band, say) cannot keep every last bit, and must then show that nothing but the last bits
moved.  Write every scenario of ``trace_hashes.py`` with each tree, then compare:

    PYTHONPATH=/path/to/old/tree python benchmarks/trace_compare.py --write /tmp/old
    python benchmarks/trace_compare.py --write /tmp/new
    python benchmarks/trace_compare.py --compare /tmp/old /tmp/new [--rtol 1e-9]

``--write DIR --set key=value`` adds an override to every scenario (e.g. ``execution.batch_clients=8``,
against the same tree without it).

The comparison reads every CSV table of every scenario: the same columns and rows (in order), every
text cell equal and every number within ``rtol`` (relative, with an absolute floor of ``rtol`` x the
column's largest magnitude).  It prints the largest relative difference per table and exits 1 on a
mismatch.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_hashes import scenarios  # noqa: E402  (the same scenario list)

CSV_TABLES = ("events.csv", "rounds.csv", "clients.csv", "final.csv", "links.csv")


def write_all(out: Path, only: list[str], extra: list[str] = ()) -> None:
    from pwffsim.cli import main

    for name, path, overrides in scenarios():
        if only and name not in only:
            continue
        d = out / name.replace("/", "__")
        args = (["run"] + ([path] if path else []) + ["--out", str(d), "--seed", "0", "--no-plot", "--quiet"]
                + [a for o in [*overrides, *extra] for a in ("--set", o)])
        with contextlib.redirect_stdout(io.StringIO()):
            if main(args) != 0:
                raise SystemExit(f"trace_compare: run failed: {' '.join(args)}")
        print(f"wrote {d}", flush=True)


def _num(x: str):
    try:
        return float(x)
    except ValueError:
        return None


def compare_table(a: Path, b: Path, rtol: float) -> tuple[float, list[str]]:
    """(largest relative difference, problems) of one table in two runs."""
    ra, rb = list(csv.reader(a.open())), list(csv.reader(b.open()))
    if not ra or not rb or ra[0] != rb[0]:
        return math.inf, [f"{a.name}: columns differ"]
    if len(ra) != len(rb):
        return math.inf, [f"{a.name}: {len(ra) - 1} vs {len(rb) - 1} rows"]
    cols = ra[0]
    scale = [0.0] * len(cols)
    for row in ra[1:]:
        for j, x in enumerate(row):
            v = _num(x)
            if v is not None and math.isfinite(v):
                scale[j] = max(scale[j], abs(v))
    worst, problems = 0.0, []
    for i, (x, y) in enumerate(zip(ra[1:], rb[1:])):
        for j, (u, v) in enumerate(zip(x, y)):
            fu, fv = _num(u), _num(v)
            if fu is None or fv is None or not (math.isfinite(fu) and math.isfinite(fv)):
                if u != v and not (fu is not None and fv is not None and math.isnan(fu) and math.isnan(fv)):
                    problems.append(f"{a.name} row {i} {cols[j]}: {u!r} vs {v!r}")
                continue
            rel = abs(fu - fv) / max(abs(fu), abs(fv), rtol * scale[j], 1e-300)
            worst = max(worst, rel)
            if rel > rtol:
                problems.append(f"{a.name} row {i} {cols[j]}: {u} vs {v} (rel {rel:.2e})")
    return worst, problems


def compare_all(old: Path, new: Path, rtol: float) -> int:
    bad = 0
    for d in sorted(p for p in old.iterdir() if p.is_dir()):
        for t in CSV_TABLES:
            a, b = d / t, new / d.name / t
            if not a.exists() and not b.exists():
                continue
            if not (a.exists() and b.exists()):
                print(f"{d.name}/{t}: only in one tree")
                bad += 1
                continue
            worst, problems = compare_table(a, b, rtol)
            print(f"{d.name:40s} {t:12s} max rel diff {worst:.2e}")
            for p in problems[:5]:
                print(f"    {p}")
            bad += bool(problems)
    print("within tolerance" if not bad else f"{bad} table(s) differ beyond rtol={rtol}")
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="DIR", type=Path)
    mode.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), type=Path)
    ap.add_argument("--rtol", type=float, default=1e-9)
    ap.add_argument("--only", action="append", default=[], help="scenario name (repeatable)")
    ap.add_argument("--set", action="append", default=[], help="with --write: an override for every scenario")
    args = ap.parse_args()
    if args.write:
        write_all(args.write, args.only, args.set)
        return 0
    return compare_all(*args.compare, args.rtol)


if __name__ == "__main__":
    sys.exit(main())
