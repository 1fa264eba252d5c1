"""How the scenario's network knobs reach the world: a topology's channel model, its cells in
`validate` and the resolved TOML, an explicit shadowing sigma under every model, the minimum distance
from every base station, and the standard's mast height by default."""
from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import simpy

from pwffsim.cli import main
from pwffsim.net.pathloss import PATH_LOSS_MODELS
from pwffsim.net.placement import place_uniform_disc, place_uniform_square
from pwffsim.scenario import dump_scenario_toml, load_scenario, scenario_from_dict
from pwffsim.scenario.schema import TOPOLOGY_CELL_KEYS
from pwffsim.sim.world import World

TOPO = Path(__file__).resolve().parents[1] / "topologies"


def _world(sc):
    return World(sc, simpy.Environment())


def _hex7(tmp_path, channel=""):
    f = tmp_path / "s.toml"
    f.write_text(f'topology = "{TOPO / "hex7_uma.toml"}"\n[devices]\ncount = 7\n[channel]\n{channel}\n')
    return f


# --------------------------------------------------------------------------------------------------
# a topology's channel model, cells and resolved TOML
# --------------------------------------------------------------------------------------------------
def test_topology_channel_model_is_used_unless_path_loss_is_set(tmp_path):
    sc = load_scenario(_hex7(tmp_path))
    assert sc.channel.path_loss == "UMa" and _world(sc).link.path_loss_model.name == "UMa"
    sc = load_scenario(_hex7(tmp_path, 'path_loss = "free-space"'))
    assert sc.channel.path_loss == "free-space" and _world(sc).link.path_loss_model.name == "free-space"
    # built from a dict (no file loading): the world picks the topology's model too
    sc = scenario_from_dict({"topology": str(TOPO / "hex7_umi.toml"), "devices": {"count": 3},
                             "fl": {"clients_per_round": 2}})
    assert _world(sc).link.path_loss_model.name == "UMi"
    sc = scenario_from_dict({"topology": str(TOPO / "single_cell.toml"), "devices": {"count": 3},
                             "fl": {"clients_per_round": 2}})
    assert _world(sc).link.path_loss_model.name == "macro-128.1-37.6"


def test_validate_reports_the_topology_cells(tmp_path, capsys):
    assert main(["validate", str(_hex7(tmp_path))]) == 0
    assert "7 cells" in capsys.readouterr().out


def test_resolved_toml_lists_no_unused_cell_and_round_trips(tmp_path):
    sc = load_scenario(_hex7(tmp_path), overrides=["cells.0.noise_density_dbm_hz=-170.0"])
    data = tomllib.loads(dump_scenario_toml(sc))
    (cell,) = data["cells"]  # only what cells[0] still supplies (the noise density, ...)
    assert cell["noise_density_dbm_hz"] == -170.0 and not set(cell) & set(TOPOLOGY_CELL_KEYS)
    assert data["channel"]["path_loss"] == "UMa" and "shadowing_sigma_db" not in data["channel"]
    again = tmp_path / "resolved.toml"
    again.write_text(dump_scenario_toml(sc))
    assert load_scenario(again) == sc
    w = _world(sc)
    assert [c.id for c in w.cells] == [f"bs{i}" for i in range(7)]
    assert w.cells[0].uplink.noise_density_w_per_hz == pytest.approx(10 ** (-170 / 10) / 1000)
    # without a topology the cells are listed as before
    plain = tomllib.loads(dump_scenario_toml(load_scenario(None)))
    assert plain["cells"][0]["id"] == "cell0" and plain["cells"][0]["carrier_hz"] == 2e9


# --------------------------------------------------------------------------------------------------
# shadowing sigma
# --------------------------------------------------------------------------------------------------
def _one_cell(path_loss, **channel):
    return scenario_from_dict({"channel": {"path_loss": path_loss, "fading": "none", **channel},
                               "devices": {"count": 3}, "fl": {"clients_per_round": 2}})


@pytest.mark.parametrize("name", sorted(PATH_LOSS_MODELS))
def test_explicit_sigma_overrides_every_model_and_zero_turns_shadowing_off(name):
    w = _world(_one_cell(name, shadowing_sigma_db=0.0))
    m, c = w.link.path_loss_model, w.link.cells[0]
    for k in range(3):
        xy = w.position(k, 0.0)
        d = math.hypot(*xy)
        los = w.link.los(k, 0, xy)
        assert w.link.gain_db(k, 0, xy) == -m.path_loss_db(d, c.carrier_hz, los, h_bs_m=c.height_m)
    m3 = _world(_one_cell(name, shadowing_sigma_db=3.0)).link.path_loss_model
    assert m3.shadowing_sigma_db(True, 100.0, 2e9) == m3.shadowing_sigma_db(False, 100.0, 2e9) == 3.0


def test_unset_sigma_keeps_the_defaults():
    assert _world(_one_cell("macro-128.1-37.6")).link.path_loss_model.shadowing_sigma_db(True, 100.0, 2e9) == 8.0
    uma = _world(_one_cell("UMa")).link.path_loss_model
    assert (uma.shadowing_sigma_db(True, 100.0, 2e9, h_bs_m=25.0), uma.shadowing_sigma_db(False, 100.0, 2e9)) == (4.0, 6.0)


# --------------------------------------------------------------------------------------------------
# minimum distance from every base station
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placement,size", [("square", "side_m = 600"), ("disc", "radius_m = 300")])
def test_min_distance_applies_from_every_base_station(tmp_path, placement, size):
    f = tmp_path / "h.toml"
    f.write_text(f'topology = "{TOPO / "hierarchical.toml"}"\n[devices]\ncount = 400\nplacement = "{placement}"\n'
                 f'{size}\nmin_distance_m = 60\n')
    w = _world(load_scenario(f))
    xy = np.array([d.position_m for d in w.devices])
    for c in w.cells:
        assert np.min(np.hypot(*(xy - c.position_m).T)) >= 60.0
    # the centroid (not a base station) is no longer kept clear
    assert np.min(np.hypot(*xy.T)) < 60.0


def test_single_site_at_the_centre_draws_as_before():
    centre = (10.0, -5.0)
    for place, size in ((place_uniform_disc, 250.0), (place_uniform_square, 500.0)):
        a = place(np.random.default_rng(1), 50, centre, size, 10.0)
        b = place(np.random.default_rng(1), 50, centre, size, 10.0, sites_m=[centre])
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# mast height
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,height", [("UMi", 10.0), ("UMa", 25.0), ("RMa", 35.0)])
def test_default_cell_height_is_the_model_standard(name, height):
    def gain_and_expected(cells, h):
        sc = scenario_from_dict({"channel": {"path_loss": name, "shadowing_sigma_db": 0.0}, "cells": cells,
                                 "devices": {"count": 3, "min_distance_m": 50.0}, "fl": {"clients_per_round": 2}})
        w = _world(sc)
        m, xy = w.link.path_loss_model, w.position(0, 0.0)
        want = -m.path_loss_db(math.hypot(*xy), 2e9, w.link.los(0, 0, xy), h_bs_m=h)
        return w.link.gain_db(0, 0, xy), want

    got, want = gain_and_expected([{}], height)  # no height given: the standard's mast
    assert got == want
    got, want = gain_and_expected([{"height_m": 30.0}], 30.0)  # a given height is kept
    assert got == want and got != gain_and_expected([{}], height)[0]
