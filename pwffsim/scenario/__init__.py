"""The scenario: every knob of a run, its unit and its default.

A scenario is one TOML file; :func:`load_scenario` validates it with pydantic and returns a
:class:`Scenario` in which every default is filled in.  The models (one per section) are in
:mod:`.schema`; reading files, ``--set`` overrides, the resolved TOML and the reference table in
:mod:`.loading`.

Errors are raised as :class:`ScenarioError`, whose message is one line naming the file, the field
path, what was expected and what was given.
"""
from __future__ import annotations

from .loading import (
    ScenarioError,
    apply_overrides,
    dump_scenario_toml,
    load_scenario,
    parse_override,
    read_scenario_dict,
    reference_rows,
    scenario_from_dict,
)
from .schema import (
    PWFF_SCHEMES,
    CellConfig,
    ChannelConfig,
    DataConfig,
    DeviceProfileConfig,
    DevicesConfig,
    ExecutionConfig,
    FLConfig,
    HandoverConfig,
    MobilityConfig,
    ModelConfig,
    PWFFConfig,
    Scenario,
)

__all__ = [
    "PWFF_SCHEMES",
    "CellConfig",
    "ChannelConfig",
    "DataConfig",
    "DeviceProfileConfig",
    "DevicesConfig",
    "ExecutionConfig",
    "FLConfig",
    "HandoverConfig",
    "MobilityConfig",
    "ModelConfig",
    "PWFFConfig",
    "Scenario",
    "ScenarioError",
    "apply_overrides",
    "dump_scenario_toml",
    "load_scenario",
    "parse_override",
    "read_scenario_dict",
    "reference_rows",
    "scenario_from_dict",
]
