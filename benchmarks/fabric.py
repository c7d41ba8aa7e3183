"""Fabric-model benchmark: where agents should live, what a step costs, DNI against lock-step.

    python benchmarks/fabric.py            # every preset, full budgets (several minutes)
    python benchmarks/fabric.py --quick    # CI smoke run: two small presets, tiny budgets
    python benchmarks/fabric.py --json     # the tables, then one JSON object as the last line

For the 64-layer chain (examples/chain64.toml) and the two-timescale system
(examples/two_timescale_fabric.toml) on each preset it reports
  * placement cost per method (hop-bytes, busiest link, time; DNI, full batch),
  * predicted samples/s for lock-step backprop with M = 1 and M = 8 micro-batches (GPipe) and
    for DNI at the same micro-batch sizes, the speed-up and the mean core utilisation,
and then the model's own targets: placing 1,000 agents on the 32-chip mesh, simulating a
million messages, annealing against row-major first-fit, and the exact search's gap on 4 x 4.
Predictions are model outputs, not measurements of hardware; wall times are of this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.fabric import (
    Fabric,
    PlacementError,
    chain_workload,
    place,
    place_problem,
    preset_names,
    simulate,
)
from synthgrad.orchestrator.fabric.modelcost import costs_from_topology
from synthgrad.orchestrator.fabric.placement import Placement, build_problem, evaluate
from synthgrad.orchestrator.fabric.search import exact

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGIES = {
    "chain64": ROOT / "examples" / "chain64.toml",
    "two_timescale": ROOT / "examples" / "two_timescale_fabric.toml",
}
SEARCH = ("row-major", "snake", "greedy", "anneal")
CONFIGS = (
    ("locked_m1", "backprop", 1),
    ("locked_m8", "backprop", 8),
    ("dni_m1", "dni", 1),
    ("dni_m8", "dni", 8),
)


def workloads(path: Path) -> dict[int, object]:
    """The topology costed at the full batch (M = 1) and at micro-batches of batch / 8."""
    topology = load_topology(path)
    batch = topology.run.batch_size
    return {m: costs_from_topology(topology, batch=batch // m) for m in (1, 8)}


def compare_methods(workload, fabric: Fabric, seconds: float) -> dict:
    """Every search method on one problem; exact too where the grid is small enough."""
    problem = build_problem(workload, fabric)
    out = {}
    for method in SEARCH:
        pl = place_problem(problem, method, seconds=seconds)
        out[method] = {
            "hop_bytes": pl.cost["hop_bytes"],
            "max_link_load": pl.cost["max_link_load"],
            "objective": pl.cost["objective"],
            "seconds": pl.seconds,
        }
    if fabric.n_cores <= 16 and problem.n_units <= 24:
        pl = place_problem(problem, "exact")
        out["exact"] = {
            "hop_bytes": pl.cost["hop_bytes"],
            "max_link_load": pl.cost["max_link_load"],
            "objective": pl.cost["objective"],
            "seconds": pl.seconds,
            **pl.notes,
        }
    base = out["row-major"]["hop_bytes"]
    for row in out.values():
        row["vs_row_major"] = row["hop_bytes"] / base if base else 1.0
    return {"units": problem.n_units, "methods": out}


def simulate_configs(work: dict, fabric: Fabric, seconds: float, steps: int) -> dict:
    """Lock-step and DNI at M = 1 and M = 8, each on its own annealed placement."""
    out = {}
    for key, mode, m in CONFIGS:
        w = work[m].with_mode(mode)
        try:
            pl = place(w, fabric, "anneal", microbatches=m, seconds=seconds)
        except PlacementError as err:
            out[key] = {"error": str(err)}
            continue
        r = simulate(pl, mode, m, "gpipe", steps=steps)
        out[key] = {
            "samples_per_s": r.samples_per_s,
            "step_time_s": r.step_time_s,
            "core_utilisation": r.core_utilisation,
            "link_utilisation_max": r.link_utilisation_max,
            "cores": len(r.cores),
        }
    for m in (1, 8):
        locked, dni = out[f"locked_m{m}"], out[f"dni_m{m}"]
        if "samples_per_s" in locked and "samples_per_s" in dni:
            out[f"speedup_m{m}"] = dni["samples_per_s"] / locked["samples_per_s"]
    return out


def target_place_1000(seconds: float, layers: int) -> dict:
    w = chain_workload(layers - 2, name=f"chain{layers - 2}")
    t0 = time.perf_counter()
    pl = place(w, "wormhole_galaxy", "anneal", seconds=seconds)
    elapsed = time.perf_counter() - t0
    row = place(w, "wormhole_galaxy", "row-major")
    return {
        "agents": layers,
        "units": pl.problem.n_units,
        "seconds": elapsed,
        "budget_s": seconds,
        "hop_bytes_vs_row_major": pl.cost["hop_bytes"] / row.cost["hop_bytes"],
        "met": elapsed <= 30.0,
    }


def target_million_messages(messages: int, layers: int) -> dict:
    """DNI on a chain of `layers` agents at micro-batch 32 (one core each) on the 32-chip mesh."""
    placement = place(
        chain_workload(layers - 2, batch=32), "wormhole_galaxy", "greedy", seconds=5.0
    )
    per_step = sum(2 if link.mode != "none" else 1 for link in placement.problem.workload.links)
    steps = max(2, math.ceil(messages / per_step))
    t0, c0 = time.perf_counter(), time.process_time()
    r = simulate(placement, "dni", 1, steps=steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "agents": layers,
        "messages": r.messages,
        "events": r.events,
        "seconds": wall,
        "cpu_seconds": cpu,
        "messages_per_s": r.messages / wall,
        "met": r.messages >= 1_000_000 and wall <= 10.0,
    }


def target_exact_gap(work8, seconds: float, max_nodes: int) -> dict:
    problem = build_problem(work8, Fabric.from_name("tiny_4x4"), 8)
    sa = place_problem(problem, "anneal", seconds=seconds)
    t0 = time.perf_counter()
    core, notes = exact(problem, sa.unit_core, max_nodes=max_nodes)
    ex = Placement(problem, core, "exact", time.perf_counter() - t0, evaluate(problem, core), notes)
    gap = sa.cost["objective"] / ex.cost["objective"] - 1
    return {
        "workload": "two_timescale, DNI, micro-batch 32",
        "units": problem.n_units,
        "anneal_objective": sa.cost["objective"],
        "exact_objective": ex.cost["objective"],
        "gap": gap,
        "proven_optimal": ex.notes.get("proven_optimal"),
        "exact_seconds": ex.seconds,
        "met": gap <= 0.05,
    }


def fmt(x: float) -> str:
    return f"{x:.3g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="two small presets, tiny budgets (CI smoke run)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    ap.add_argument("--seconds", type=float, default=None, help="annealing budget per placement")
    args = ap.parse_args(argv)
    quick = args.quick
    seconds = args.seconds or (0.3 if quick else 4.0)
    steps = 6 if quick else 16
    presets = ["tiny_4x4", "wormhole_n150"] if quick else preset_names()
    t_start = time.perf_counter()
    work = {name: workloads(path) for name, path in TOPOLOGIES.items()}
    notes = sorted({n for w in work.values() for wl in w.values() for n in wl.notes})
    rows = []
    for topo in TOPOLOGIES:
        for preset in presets:
            fabric = Fabric.from_name(preset)
            row = {"topology": topo, "fabric": preset}
            try:
                row.update(compare_methods(work[topo][1], fabric, seconds))
            except PlacementError as err:
                row["error"] = str(err)
            row["simulations"] = simulate_configs(work[topo], fabric, seconds, steps)
            rows.append(row)

    print(
        "Placement cost per method (DNI, full batch; hop-bytes per step, ratio to row-major first-fit)"
    )
    print(
        f"{'topology':<14}{'fabric':<17}{'units':>6}  "
        + "".join(f"{m:>18}" for m in (*SEARCH, "exact"))
    )
    for row in rows:
        if "methods" not in row:
            print(
                f"{row['topology']:<14}{row['fabric']:<17}{'-':>6}  does not fit: {row['error'][:90]}"
            )
            continue
        cells = []
        for m in (*SEARCH, "exact"):
            r = row["methods"].get(m)
            cells.append(f"{fmt(r['hop_bytes'])} ({r['vs_row_major']:.2f})" if r else "-")
        print(
            f"{row['topology']:<14}{row['fabric']:<17}{row['units']:>6}  "
            + "".join(f"{c:>18}" for c in cells)
        )
    print()
    print(
        "Predicted samples/s (core utilisation): lock-step backprop (GPipe) vs DNI, same micro-batch"
    )
    print(
        f"{'topology':<14}{'fabric':<17}"
        + "".join(f"{k:>20}" for k, _, _ in CONFIGS)
        + f"{'DNI/BP M=1':>12}{'DNI/BP M=8':>12}"
    )
    for row in rows:
        sims = row["simulations"]
        cells = [
            f"{fmt(s['samples_per_s'])} ({s['core_utilisation']:.0%})"
            if "samples_per_s" in s
            else "no fit"
            for s in (sims[k] for k, _, _ in CONFIGS)
        ]
        ups = [f"{sims[f'speedup_m{m}']:.2f}x" if f"speedup_m{m}" in sims else "-" for m in (1, 8)]
        print(
            f"{row['topology']:<14}{row['fabric']:<17}"
            + "".join(f"{c:>20}" for c in cells)
            + "".join(f"{u:>12}" for u in ups)
        )
    print()

    targets = {}
    targets["place_1000_agents_galaxy"] = target_place_1000(
        1.5 if quick else 20.0, 100 if quick else 1000
    )
    targets["simulate_1m_messages"] = target_million_messages(
        20_000 if quick else 1_000_000, 200 if quick else 1000
    )
    targets["exact_gap_4x4"] = target_exact_gap(
        work["two_timescale"][8], max(seconds, 1.0), 200_000 if quick else 5_000_000
    )
    ratios = {}
    for row in rows:
        if "methods" in row:
            ratios.setdefault(row["topology"], {})[row["fabric"]] = row["methods"]["anneal"][
                "vs_row_major"
            ]
    targets["anneal_vs_row_major"] = {
        topo: {"ratios": r, "met_on": sorted(k for k, v in r.items() if v <= 0.7)}
        for topo, r in ratios.items()
    }
    if quick:
        for key in ("place_1000_agents_galaxy", "simulate_1m_messages"):
            targets[key]["met"] = None  # a quick run is too small to judge the target
    p, s, g = (
        targets["place_1000_agents_galaxy"],
        targets["simulate_1m_messages"],
        targets["exact_gap_4x4"],
    )
    print("Targets")
    print(
        f"  place {p['agents']} agents ({p['units']} pieces) on wormhole_galaxy with anneal: {p['seconds']:.1f} s "
        f"(target <= 30 s), hop-bytes {p['hop_bytes_vs_row_major']:.2f} x row-major"
    )
    print(
        f"  simulate {s['messages']} messages ({s['events']} events, {s['agents']} agents, DNI): {s['seconds']:.1f} s wall, "
        f"{s['cpu_seconds']:.1f} s CPU, {s['messages_per_s']:.0f} messages/s (target 1 M in <= 10 s)"
    )
    print(
        f"  exact search on tiny_4x4 ({g['units']} pieces): anneal within {g['gap']:.1%} of the optimum "
        f"(proven: {g['proven_optimal']}, {g['exact_seconds']:.1f} s; target <= 5 %)"
    )
    for topo, t in targets["anneal_vs_row_major"].items():
        pretty = ", ".join(f"{k} {v:.2f}" for k, v in t["ratios"].items())
        print(f"  anneal / row-major hop-bytes, {topo}: {pretty} (target <= 0.70)")
    for note in notes:
        print(f"note: {note}")
    elapsed = time.perf_counter() - t_start
    print(f"({elapsed:.0f} s in all)")
    if args.json:
        print(
            json.dumps(
                {
                    "quick": quick,
                    "seconds": elapsed,
                    "rows": rows,
                    "targets": targets,
                    "notes": notes,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
