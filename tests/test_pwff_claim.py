"""benchmarks/pwff_claim.py at its --quick size (what CI runs): every run lands, the analysis reads them."""
import csv
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "pwff_claim.py"


def _bench():
    spec = importlib.util.spec_from_file_location("pwff_claim", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paired_gap_and_ci_by_hand():
    b = _bench()
    rows = [dict(divergence=1.0, samples=16, scheme=s, seed=k, objective=v)
            for s, vals in (("pwff", [0.5, 0.7, 0.6]), ("fedavg-all", [0.4, 0.4, 0.5])) for k, v in enumerate(vals)]
    (m, h), = b.paired_gaps(rows, "pwff", "fedavg-all").values()
    assert m == pytest.approx(0.5 / 3)  # diffs 0.1, 0.3, 0.1
    sd = ((2 * (0.1 - m) ** 2 + (0.3 - m) ** 2) / 2) ** 0.5
    assert h == pytest.approx(4.302652729911275 * sd / 3 ** 0.5)  # t(0.975, 2 dof)


def test_quick_grid_runs_and_resumes(tmp_path):
    b = _bench()
    out = tmp_path / "claim"
    assert b.main(["--quick", "--out", str(out), "--jobs", "1"]) == 0
    rows = list(csv.DictReader((out / "claim.csv").open()))
    assert len(rows) == 8 and {r["scheme"] for r in rows} == {"pwff", "fedavg-all"}
    assert all(0.0 <= float(r["objective"]) <= 1.0 for r in rows)
    assert "fedavg-all" in (out / "claim.md").read_text() and (out / "claim_gap.png").stat().st_size > 0
    done = sorted(p.stat().st_mtime for p in out.glob("runs/**/summary.json"))
    assert b.main(["--quick", "--out", str(out), "--jobs", "1"]) == 0  # resumes: nothing is run again
    assert sorted(p.stat().st_mtime for p in out.glob("runs/**/summary.json")) == done
