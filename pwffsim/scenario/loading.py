"""Scenario files in and out: loading a TOML file with ``--set`` overrides, one-line errors, the
resolved scenario as TOML, and the reference table of every knob."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .schema import TOPOLOGY_CELL_KEYS, Scenario


class ScenarioError(ValueError):
    """A scenario file (or override) is malformed.  ``str(err)`` is one line."""


def _format_error(source: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "<root>"
    given = e.get("input")
    given_s = repr(given)
    if len(given_s) > 60:
        given_s = given_s[:57] + "..."
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        return f"{source}: field '{loc}': unknown key (check spelling; see `pwffsim validate --reference`)"
    if e["type"] == "missing":
        return f"{source}: field '{loc}': required but missing"
    return f"{source}: field '{loc}': {msg}; given {given_s}"


def scenario_from_dict(data: dict[str, Any], source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioError(_format_error(source, err)) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; value is read as a TOML value, else taken as a string."""
    if "=" not in text:
        raise ScenarioError(f"--set '{text}': expected key=value (e.g. fl.rounds=3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ScenarioError(f"--set '{text}': expected a dotted key such as fl.rounds")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def _default_at(path: list[str]) -> Any:
    node: Any = _drop_none(Scenario().model_dump(mode="python"))
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node.get(part, {})
    return node


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list):
                try:
                    node = node[int(part)]
                except (ValueError, IndexError):
                    raise ScenarioError(f"--set '{text}': '{'.'.join(path[:i+1])}' is not a valid list index") from None
                continue
            if part not in node and path[i + 1].isdigit():
                # A list of sections not in the file yet (e.g. cells.0.x): start from its defaults.
                node[part] = _default_at(path[: i + 1])
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, (dict, list)):
                raise ScenarioError(f"--set '{text}': '{'.'.join(path[:i+1])}' is not a table")
            node = nxt
        if isinstance(node, list):
            try:
                node[int(path[-1])] = value
            except (ValueError, IndexError):
                raise ScenarioError(f"--set '{text}': '{path[-1]}' is not a valid list index") from None
        else:
            node[path[-1]] = value
    return data


def read_scenario_dict(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """Read a TOML file into a dict (``None``: the built-in default, an empty dict)."""
    if path is None:
        return {}, "<built-in default>"
    p = Path(path)
    source = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"{source}: file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{source}: cannot read as a UTF-8 TOML file ({exc.__class__.__name__})") from None
    try:
        return tomllib.loads(text), source
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None


def load_scenario(path: str | Path | None = None, overrides: list[str] | None = None, seed: int | None = None) -> Scenario:
    data, source = read_scenario_dict(path)
    if overrides:
        data = apply_overrides(data, list(overrides))
    if seed is not None:
        data["seed"] = seed
    sc = scenario_from_dict(data, source)
    # Files named in a scenario are relative to the scenario file; the resolved scenario holds them absolute.
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    if sc.topology is not None:
        sc.topology = str((base / sc.topology).resolve())
    if sc.mobility.trace is not None:
        sc.mobility.trace = str((base / sc.mobility.trace).resolve())
    if sc.mobility.activity is not None:
        sc.mobility.activity = str((base / sc.mobility.activity).resolve())
    if sc.fl.availability is not None:
        sc.fl.availability = str((base / sc.fl.availability).resolve())
    for attr in ("train_path", "eval_path"):
        if getattr(sc.data, attr) is not None:
            setattr(sc.data, attr, str((base / Path(getattr(sc.data, attr)).expanduser()).resolve()))
    for name, p in (("topology", sc.topology), ("mobility.trace", sc.mobility.trace),
                    ("mobility.activity", sc.mobility.activity), ("fl.availability", sc.fl.availability),
                    ("data.train_path", sc.data.train_path), ("data.eval_path", sc.data.eval_path)):
        if p is not None and not Path(p).is_file():
            raise ScenarioError(f"{source}: field '{name}': an existing file; given {p!r}")
    if sc.topology is not None:
        _resolve_topology_channel(sc)
    if sc.model.cost_model is not None:
        _resolve_cost_model(sc, base, source)
    return sc


def _resolve_cost_model(sc: Scenario, base: Path, source: str) -> None:
    """``model.cost_model``: a shipped name stays; a path becomes absolute (relative to the scenario
    file) and its config.json is read and checked (torch-free) so a missing or malformed one is a
    one-line error naming the scenario file, the field and the config file."""
    from ..learn.costconfig import is_shipped, read_cost_config

    if not is_shipped(sc.model.cost_model):
        sc.model.cost_model = str((base / Path(sc.model.cost_model).expanduser()).resolve())
    else:
        sc.model.cost_model = sc.model.cost_model.lower()
    try:
        read_cost_config(sc.model.cost_model)
    except ValueError as err:
        raise ScenarioError(f"{source}: field 'model.cost_model': {err}") from None


def _resolve_topology_channel(sc: Scenario) -> None:
    """With a topology and no ``channel.path_loss`` set, the topology's ``channel_model`` becomes the
    path loss (set explicitly, so the resolved TOML says it and reads back the same)."""
    from ..net.topology import load_topology

    try:
        topology_model = load_topology(sc.topology).channel_model
    except ValueError as err:  # TopologyError: one line naming the topology file
        raise ScenarioError(str(err).splitlines()[0]) from None
    if "path_loss" not in sc.channel.model_fields_set and topology_model is not None:
        sc.channel.path_loss = topology_model


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_drop_none(v) for v in obj]
    if isinstance(obj, tuple):
        return [_drop_none(v) for v in obj]
    return obj


def dump_scenario_toml(scenario: Scenario) -> str:
    """The resolved scenario (every default filled in) as TOML.  Unset optional knobs are omitted;
    with a topology, ``cells`` lists only what cells[0] still supplies (not the keys the topology's
    base stations replace)."""
    import tomli_w

    data = _drop_none(scenario.model_dump(mode="python"))
    if scenario.topology is not None:
        data["cells"] = [{k: v for k, v in data["cells"][0].items() if k not in TOPOLOGY_CELL_KEYS}]
    return tomli_w.dumps(data)


def _type_name(ann: Any) -> str:
    origin, args = get_origin(ann), get_args(ann)
    if origin is Literal:
        return " / ".join(repr(a) for a in args)
    if origin is Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in args if a is not type(None)]
        return (" or ".join(_type_name(a) for a in inner)) + " (optional)"
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    return getattr(ann, "__name__", str(ann))


def reference_rows() -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every knob, for the README and `validate --reference`."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            key = f"{prefix}{name}"
            sub = None
            origin_args = getattr(ann, "__args__", ())
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                sub = ann
            elif origin_args and isinstance(origin_args[0], type) and issubclass(origin_args[0], BaseModel):
                sub = origin_args[0]
                key = f"{prefix}{name}[]"
            if sub is not None:
                walk(sub, key + ".")
                continue
            if field.default_factory is not None:
                default = repr(field.default_factory())
            else:
                default = repr(field.default)
            tname = _type_name(ann)
            rows.append((key, tname, default, field.description or ""))

    walk(Scenario, "")
    return rows
