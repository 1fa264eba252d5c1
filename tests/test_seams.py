"""The architecture's seams: the network side never imports torch, the learning side never simpy."""
import subprocess
import sys


def _modules_after(code: str) -> set[str]:
    code += "\nimport sys; print('@@MODULES@@', ' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split("@@MODULES@@", 1)[1].split())


def _every_module(package: str) -> str:
    """Code that imports every module of ``package`` (walked, so a new module is covered too)."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    names = [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=package + ".")]
    assert len(names) > 3, names
    return "\n".join(f"import {n}" for n in names)


def test_network_side_never_imports_torch():
    mods = _modules_after(_every_module("pwffsim.net"))
    assert "torch" not in mods and "transformers" not in mods


def test_learning_side_never_imports_simpy():
    mods = _modules_after(_every_module("pwffsim.learn"))
    assert "simpy" not in mods


def test_validating_a_scenario_does_not_import_torch():
    mods = _modules_after("from pwffsim.cli import main\nmain(['validate', '--reference'])")
    assert "torch" not in mods


def test_readme_reference_is_in_sync_with_the_schema():
    from pathlib import Path

    from pwffsim.docs import scenario_reference_markdown
    from pwffsim.trace import schema_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert scenario_reference_markdown() in readme, "README reference is stale: paste `python -m pwffsim.docs`"
    assert schema_markdown() in readme


def test_readme_model_figures_come_from_the_code():
    """The README's size of the shipped base model and its tokenizer are the code's own counts."""
    from pathlib import Path

    from pwffsim.learn.model import ModelSpec, load_base

    model, tok = load_base(ModelSpec())
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    total = f"{sum(p.numel() for p in model.parameters()):,}".replace(",", " ")
    assert f"({total} parameters, a word-level tokenizer of\n  {len(tok)} tokens" in readme
