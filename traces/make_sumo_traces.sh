#!/usr/bin/env bash
# Regenerates traces/grid_fcd.xml and traces/highway_fcd.xml with Eclipse SUMO (pip install eclipse-sumo).
# Usage: bash traces/make_sumo_traces.sh   (from the repository root). Intermediate files go to a temp dir.
set -euo pipefail
OUT="$(cd "$(dirname "$0")" && pwd)"
SUMO_HOME="${SUMO_HOME:-$(python -c 'import sumo; print(sumo.SUMO_HOME)')}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# (1) 4x4 grid, 200 m blocks, 10 cars + 3 pedestrians, 300 s
netgenerate --grid --grid.number=4 --grid.length=200 --seed 42 -o grid.net.xml
python "$SUMO_HOME/tools/randomTrips.py" -n grid.net.xml -r grid.rou.xml -o grid.trips.xml \
    -b 0 -e 50 -p 5 --seed 42 --min-distance 600 -i 12 --validate
python "$SUMO_HOME/tools/randomTrips.py" -n grid.net.xml -r grid.ped.rou.xml -o grid.ped.trips.xml \
    --pedestrians --prefix ped -b 0 -e 30 -p 10 --seed 7 --min-distance 400 -i 3
sumo -n grid.net.xml -r grid.rou.xml,grid.ped.rou.xml --fcd-output grid_fcd.xml \
    --fcd-output.geo false --device.fcd.period 1 --step-length 1 --end 300 --seed 42 --no-step-log true

# (2) straight 3 km, 3-lane two-way highway (120 km/h limit), 8 cars, 160 s
cat > highway.nod.xml <<'XML'
<nodes>
    <node id="W" x="0.0" y="0.0" type="priority"/>
    <node id="E" x="3000.0" y="0.0" type="priority"/>
</nodes>
XML
cat > highway.edg.xml <<'XML'
<edges>
    <edge id="WE" from="W" to="E" numLanes="3" speed="33.33"/>
    <edge id="EW" from="E" to="W" numLanes="3" speed="33.33"/>
</edges>
XML
cat > highway.rou.xml <<'XML'
<routes>
    <vType id="car" maxSpeed="40" speedFactor="1.0" speedDev="0.1" accel="2.6" decel="4.5"/>
    <flow id="east" type="car" begin="0" end="40" number="5" from="WE" to="WE" departLane="random" departSpeed="max"/>
    <flow id="west" type="car" begin="5" end="35" number="3" from="EW" to="EW" departLane="random" departSpeed="max"/>
</routes>
XML
netconvert --node-files highway.nod.xml --edge-files highway.edg.xml -o highway.net.xml
sumo -n highway.net.xml -r highway.rou.xml --fcd-output highway_fcd.xml \
    --fcd-output.geo false --device.fcd.period 1 --step-length 1 --end 160 --seed 42 --no-step-log true
cp grid_fcd.xml highway_fcd.xml "$OUT/"
