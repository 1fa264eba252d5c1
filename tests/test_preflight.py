"""`pwffsim validate` is a full preflight: it rejects what `run` would (exit 2, one line naming the
file, the field and what was expected), prints an estimate, and refuses a scenario too big for the
machine."""
import subprocess
import sys
from pathlib import Path

import pytest

from pwffsim.cli import main

ROOT = Path(__file__).resolve().parents[1]
WALKERS = str(ROOT / "traces" / "examples" / "walkers_ns2.toml")


def _write(tmp_path, text: str, name: str = "s.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _rejected(capsys, *argv) -> str:
    assert main(["validate", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pwffsim: error: "), err
    return err


def test_availability_file_contents(tmp_path, capsys):
    _write(tmp_path, "client,start_s,end_s\n0,10,oops\n", "avail.csv")
    s = _write(tmp_path, 'fl.availability = "avail.csv"\n')
    err = _rejected(capsys, s)
    assert "s.toml" in err and "field 'fl.availability'" in err and "avail.csv" in err


def test_model_source_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    s = _write(tmp_path, f'model.source = "{tmp_path / "ckpt"}"\n')
    err = _rejected(capsys, s)
    assert "field 'model.source'" in err and "config.json" in err


def test_client_ids_not_in_the_trace(capsys):
    err = _rejected(capsys, WALKERS, "--set", "mobility.client_ids=['0','1','nobody','3','4']")
    assert "walkers_ns2.toml" in err and "field 'mobility.client_ids'" in err and "nobody" in err


def test_more_devices_than_trace_nodes(capsys):
    err = _rejected(capsys, WALKERS, "--set", "devices.count=50", "--set", "fl.clients_per_round=3")
    assert "field 'devices.count'" in err and "given 50" in err


def test_seq_len_beyond_the_positions_and_too_short(tmp_path, capsys):
    s = _write(tmp_path, "[fl]\nseq_len = 4096\n")
    err = _rejected(capsys, s)
    assert "field 'fl.seq_len'" in err and "128 positions" in err and "given 4096" in err
    err = _rejected(capsys, s, "--set", "fl.seq_len=8")
    assert "field 'fl.seq_len'" in err and "at least" in err and "given 8" in err


def test_cost_model_that_fails_to_parse(tmp_path, capsys):
    _write(tmp_path, "{not json", "config.json")
    s = _write(tmp_path, 'model.cost_model = "config.json"\n')
    err = _rejected(capsys, s)
    assert "field 'model.cost_model'" in err and "not valid JSON" in err


def test_estimate_line_and_refusal(tmp_path, capsys, monkeypatch):
    from pwffsim.scenario import preflight

    s = _write(tmp_path, '[learning]\nmode = "none"\n[devices]\ncount = 100000\n[fl]\nclients_per_round = 100\n')
    assert main(["validate", s]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("ok (100000 devices, 1 cells, 10 rounds)")
    assert out[1].startswith("estimate: memory ") and "network 195.3 MB" in out[1]
    assert "2100 events per simulated second" in out[1]  # 100 transfers x (1 / 0.05 s + 1)
    monkeypatch.setattr(preflight, "available_memory_bytes", lambda: 100 << 20)
    err = _rejected(capsys, s)
    assert "exceeds the machine's available 100 MB" in err and "estimated memory 316 MB" in err


def test_the_tokenizer_count_is_the_learners():
    """The torch-free count of the longest sample equals the real learner's bounds."""
    from pwffsim.learn.batches import longest_lengths
    from pwffsim.learn.data import DataSpec
    from pwffsim.learn.model import ModelSpec, build_peft_model
    from pwffsim.scenario import Scenario, preflight

    _, tok = build_peft_model(ModelSpec())
    assert preflight.longest_sample(Scenario()) == longest_lengths(DataSpec(num_clients=1), tok)


def test_plain_validate_does_not_import_torch(tmp_path):
    s = _write(tmp_path, "[fl]\nrounds = 2\n")
    code = (f"import sys\nfrom pwffsim.cli import main\nassert main(['validate', {s!r}]) == 0\n"
            "print('@@', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("@@", 1)[1].split() == ["False"]
