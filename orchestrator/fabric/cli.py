"""`synthgrad place` and `synthgrad simulate`: the fabric model from the command line.

The lead's `orchestrator/cli.py` calls `add_place_parser` and `add_simulate_parser`; this module
also runs alone: `python -m synthgrad.orchestrator.fabric.cli place FILE --fabric PRESET`.
Errors a user can fix go to stderr with exit status 2; with `--json` the last stdout line is
one JSON object.  Torch is imported only when a handler runs (building the modules to cost).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .api import METHODS
from .costs import SCHEDULES
from .errors import FabricError, PlacementError, UnknownName
from .presets import preset_names
from .simulate import SIM_MODES, SimulationError

EXIT_USER = 2
_FMT = argparse.RawDescriptionHelpFormatter
_KNOWN = f"presets: {', '.join(preset_names())} (or a fabric .toml file, see docs/fabric.md)\nmethods: {', '.join(METHODS)}"

PLACE_EXAMPLES = f"""examples:
  synthgrad place examples/chain64.toml --fabric wormhole_t3000
  synthgrad place examples/chain64.toml --fabric wormhole_galaxy --method row-major --png rowmajor.png
  synthgrad place examples/two_timescale_fabric.toml --fabric tiny_4x4 --method exact --json
  synthgrad place examples/mnist_dni.toml --fabric my_chip.toml --set run.batch_size=64

{_KNOWN}"""

SIMULATE_EXAMPLES = f"""examples:
  synthgrad simulate examples/chain64.toml --fabric wormhole_t3000 --mode dni
  synthgrad simulate examples/chain64.toml --fabric wormhole_t3000 --mode backprop --microbatches 8
  synthgrad simulate examples/chain64.toml --fabric wormhole_t3000 --mode backprop --microbatches 8 --schedule 1f1b
  synthgrad simulate examples/two_timescale_fabric.toml --fabric wormhole_n150 --trace tt.json --png tt.png --json

modes: {', '.join(SIM_MODES)} (default: each link's own mode); schedules: {', '.join(SCHEDULES)}
{_KNOWN}
Open a --trace file in https://ui.perfetto.dev (or chrome://tracing)."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path, help="topology file (TOML)")
    p.add_argument("--fabric", required=True, metavar="PRESET", help="a preset name or a fabric .toml file")
    p.add_argument("--method", default="anneal", metavar="M", help=f"placement method: {', '.join(METHODS)} (default anneal)")
    p.add_argument("--seconds", type=float, default=10.0, help="time budget of greedy and anneal (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the annealing (default 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a topology key, e.g. run.batch_size=64")
    p.add_argument("--png", type=Path, metavar="OUT", help="write core-load and link-load heatmaps here")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def add_place_parser(subparsers) -> argparse.ArgumentParser:
    """Add `place`: put a topology's agents on a modelled fabric and report the cost."""
    p = subparsers.add_parser(
        "place", help="place a topology's agents on a modelled fabric", formatter_class=_FMT,
        description="Place every agent of a topology on cores of a modelled Tenstorrent-like fabric, "
        "respecting SRAM, and report hop-bytes and the busiest link.", epilog=PLACE_EXAMPLES)
    _common(p)
    p.set_defaults(func=cmd_place)
    return p


def add_simulate_parser(subparsers) -> argparse.ArgumentParser:
    """Add `simulate`: place, then predict step time, throughput and utilisation."""
    p = subparsers.add_parser(
        "simulate", help="predict step time and throughput of a topology on a fabric", formatter_class=_FMT,
        description="Place a topology on a modelled fabric, then simulate training (discrete events, "
        "fair-share contention on NoC and Ethernet links) and report samples/s and utilisation.",
        epilog=SIMULATE_EXAMPLES)
    _common(p)
    p.add_argument("--mode", default=None, metavar="M", help=f"set every gradient-carrying link to: {', '.join(SIM_MODES)}")
    p.add_argument("--microbatches", type=int, default=1, metavar="M", help="micro-batches per batch (default 1)")
    p.add_argument("--schedule", default="gpipe", metavar="S", help=f"locked pipeline schedule: {', '.join(SCHEDULES)}")
    p.add_argument("--steps", type=int, default=12, help="batches to simulate (default 12)")
    p.add_argument("--trace", type=Path, metavar="OUT.json", help="write the simulated timeline (Chrome trace)")
    p.set_defaults(func=cmd_simulate)
    return p


def _fail(verb: str, err: Exception) -> int:
    print(f"synthgrad {verb}: {err}", file=sys.stderr)
    return EXIT_USER


def _workload(args, microbatches: int = 1):
    """Load the topology and cost its agents at the micro-batch size."""
    from ..config import load_topology
    from .modelcost import costs_from_topology

    topology = load_topology(args.file, args.set)
    batch = int(topology.run.batch_size)
    micro = max(1, batch // microbatches)
    return costs_from_topology(topology, batch=micro)


def _user_errors():
    from ..config import ConfigError

    return (ConfigError, FabricError, UnknownName, PlacementError, SimulationError, ValueError, OSError)


def cmd_place(args) -> int:
    """Handler of `synthgrad place`."""
    from .api import place
    from .fabric import Fabric
    from .report import heatmap_png, placement_table

    try:
        if args.method not in METHODS:
            raise UnknownName("placement method", args.method, METHODS)
        fabric = Fabric.from_name(args.fabric)
        workload = _workload(args)
        pl = place(workload, fabric, args.method, seconds=args.seconds, seed=args.seed)
        if args.png:
            heatmap_png(pl, args.png)
    except _user_errors() as err:
        return _fail("place", err)
    print(placement_table(pl))
    for note in workload.notes:
        print(f"note: {note}")
    if args.png:
        print(f"wrote {args.png}")
    if args.json:
        print(json.dumps({"topology": str(args.file), **pl.as_dict(), "notes": workload.notes}))
    return 0


def cmd_simulate(args) -> int:
    """Handler of `synthgrad simulate`."""
    from .api import place
    from .fabric import Fabric
    from .report import heatmap_png, simulation_table, write_trace
    from .simulate import simulate

    try:
        if args.method not in METHODS:
            raise UnknownName("placement method", args.method, METHODS)
        if args.mode is not None and args.mode not in SIM_MODES:
            raise UnknownName("mode", args.mode, SIM_MODES)
        if args.schedule not in SCHEDULES:
            raise UnknownName("schedule", args.schedule, SCHEDULES)
        if args.microbatches < 1 or args.steps < 1:
            raise ValueError("--microbatches and --steps must be at least 1")
        fabric = Fabric.from_name(args.fabric)
        workload = _workload(args, args.microbatches).with_mode(args.mode)
        pl = place(workload, fabric, args.method, microbatches=args.microbatches, schedule=args.schedule,
                   seconds=args.seconds, seed=args.seed)
        result = simulate(pl, args.mode, args.microbatches, args.schedule, steps=args.steps,
                          trace=args.trace is not None)
        if args.trace:
            write_trace(result, args.trace)
        if args.png:
            heatmap_png(pl, args.png, result)
    except _user_errors() as err:
        return _fail("simulate", err)
    print(simulation_table(result))
    for note in workload.notes:
        print(f"note: {note}")
    for path in (args.trace, args.png):
        if path:
            print(f"wrote {path}")
    if args.json:
        out = {"topology": str(args.file), "fabric": fabric.name, "method": pl.method, **result.as_dict(),
               "links": result.links[:20], "placement_cost": pl.cost, "notes": workload.notes}
        print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m synthgrad.orchestrator.fabric.cli {place,simulate} ...`."""
    parser = argparse.ArgumentParser(prog="synthgrad", description="The fabric model of synthgrad.")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_place_parser(verbs)
    add_simulate_parser(verbs)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
