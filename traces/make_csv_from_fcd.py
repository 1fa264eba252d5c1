"""Writes traces/grid_pedestrians.csv (header ``t,id,x,y``) from the 3 pedestrians of
traces/grid_fcd.xml, every 5 s, rows shuffled (numpy seed 5) to exercise "any row order".
Uses only xml.etree (independent of pwffsim). Usage: ``python traces/make_csv_from_fcd.py``.
"""
from __future__ import annotations

import pathlib
import xml.etree.ElementTree as ET

import numpy as np

HERE = pathlib.Path(__file__).parent


def main() -> None:
    rows = []
    for ts in ET.parse(HERE / "grid_fcd.xml").getroot().iter("timestep"):
        t = float(ts.get("time"))
        if t % 5 != 0:
            continue
        for p in ts.iter("person"):
            rows.append(f"{t:g},{p.get('id')},{p.get('x')},{p.get('y')}")
    order = np.random.default_rng(5).permutation(len(rows))
    (HERE / "grid_pedestrians.csv").write_text("t,id,x,y\n" + "\n".join(rows[i] for i in order) + "\n")


if __name__ == "__main__":
    main()
