"""Decoupling benchmark: what synthetic gradients buy when layer agents are processes on 2 cores.

    .venv/bin/python benchmarks/decoupling.py                  # full: 300 steps per arm, tables
    .venv/bin/python benchmarks/decoupling.py --repeats 3 --wait-quiet 300   # shared machines
    .venv/bin/python benchmarks/decoupling.py --quick --json   # CI smoke: 100 steps, layers of 256

The network is examples/bench_chain.toml: MNIST source -> d1..d4 (dense 1024, batch norm,
ReLU) -> head, batch 256, Adam.  One invocation measures every arm, in rotating order when
repeated, so that the ratios compare figures taken minutes apart on the same machine:

  locked        (a)  processes, link_defaults.mode=backprop: a layer waits for its true gradient
  dni-send      (b)  processes, DNI, each sender hosts the SG model of its output (the default)
  dni-recv      (c)  processes, DNI, sg.host=receiver: the next layer answers each activation
                     with a synthetic gradient and trains the model on its own input gradient
  dni-small-sg  (b') as (b) with a cheap SG model, sg.model=mlp, sg.hidden=[64] (1024-64-1024,
                     an eighth of the linear model's work): decoupling when SGs are cheap
  dni-1p        (d)  the same DNI network in ONE process at 2 torch threads: agents.local's
                     LocalRunner, the very AgentCore code with in-memory queues for sockets
  bp-1p         (e)  a plain torch loop at 2 threads: nn.Sequential of the same modules, one
                     Adam (the honest single-process baseline)
  bp-1p-rt      (e') LocalRunner with backprop links at 2 threads: what the runtime's
                     bookkeeping costs in one process, against the plain loop

Steady state: samples/s between training step W (10% of the budget) and the last training
step.  For the process arms from the head's progress reports (run.metrics_every_s=0.1, timestamped by
the orchestrator in metrics.jsonl); for (d)-(e') from a clock read as the source is asked for
each batch.  Start-up, pipeline fill and the final evaluation fall outside that window.
"end to end" is, for the process arms, the run summary's samples_per_s (wall_s runs from START to the
head's final evaluation) and, for (d)-(e'), the same span in-process; the final evaluation is
the 10,000 MNIST test images as ONE batch (run.eval_batch_size=10000), so it is short but
inside that figure.  "cores" is CPU time used in the steady window over its wall time: on a
quiet 2-core machine decoupled processes approach 2 and the locked chain 1; "others" is what
all other work on the machine used meanwhile (/proc/stat).  An arm's figures are medians over
its quiet runs (others <= 0.25 cores) or, when none was quiet, over all its runs: torch at 2
threads in particular slows down many times when a third process takes a core, so
--repeats (in rotating order) gives each arm more chances of a quiet window.

The SG micro-timer runs d2 (1024 -> 1024) in this process at one torch thread, as an agent
does: its training step (forward, backward, Adam) against its SG model's prediction and
regression (forward, MSE backward, Adam), through the runtime's own AgentCore and
SenderInterface.  From those two, the ceiling of DNI/locked across processes on C cores is
C * layer / (layer + SG): decoupling spreads the work over the cores, SG models add to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import (
    REPO,
    Child,
    JsonlTail,
    cpu_seconds,
    exit_on_sigterm,
    finish,
    header,
    log,
    machine,
    machine_busy_seconds,
    synthgrad_command,
    table,
    wait_until_quiet,
)
from _plain import PlainChain
from synthgrad.agents.runtime.build import build_core
from synthgrad.agents.runtime.core import AgentCore
from synthgrad.agents.runtime.local import LocalRunner
from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.plan import RunPlan, plan_run

TOPOLOGY = REPO / "examples" / "bench_chain.toml"
HEAD = "head"  # the terminal agent of bench_chain.toml: its reports carry the run's progress
METRICS_EVERY_S = 0.1
CORES = 2  # what the targets assume: this machine's cores (docs/results.md, "Decoupling")
QUIET = 0.25  # a run is quiet when other work used at most this many cores in its window
# --quick narrows the layers to 256: it checks that every arm runs, not how fast.
QUICK_SETS = [f"agents.d{i}.width=256" for i in range(1, 5)]

ARMS = {  # name: (label, where, torch threads per process, topology overrides)
    "locked": ("(a) locked backprop", "processes", 1, ["link_defaults.mode=backprop"]),
    "dni-send": ("(b) DNI, SG on sender", "processes", 1, ["link_defaults.mode=dni"]),
    "dni-recv": (
        "(c) DNI, SG on receiver",
        "processes",
        1,
        ["link_defaults.mode=dni", "link_defaults.sg.host=receiver"],
    ),
    "dni-small-sg": (
        "(b') DNI, SG on sender, MLP 64 wide",
        "processes",
        1,
        ["link_defaults.mode=dni", "link_defaults.sg.model=mlp", "link_defaults.sg.hidden=[64]"],
    ),
    "dni-1p": ("(d) DNI, LocalRunner", "one process", 2, ["link_defaults.mode=dni"]),
    "bp-1p": ("(e) backprop, plain torch loop", "one process", 2, ["link_defaults.mode=backprop"]),
    "bp-1p-rt": ("(e') backprop, LocalRunner", "one process", 2, ["link_defaults.mode=backprop"]),
}
RATIOS = [  # name, numerator arm, denominator arm, target (None: reported only)
    ("DNI / locked, across processes", "dni-send", "locked", 1.8),
    ("DNI processes / DNI in one process", "dni-send", "dni-1p", 1.3),
    ("DNI processes / backprop in one process", "dni-send", "bp-1p", 0.8),
    ("SG on receiver / SG on sender", "dni-recv", "dni-send", None),
    ("DNI with a 64-wide MLP SG / locked, across processes", "dni-small-sg", "locked", None),
]


def snapshot(pids: list[int] | None = None) -> tuple[float, float, float]:
    """(clock, CPU seconds of `pids` or else of this process, busy CPU seconds of the machine)."""
    ours = sum(cpu_seconds(p) for p in pids) if pids is not None else time.process_time()
    return time.perf_counter(), ours, machine_busy_seconds()


def usage(first: tuple[float, float, float], last: tuple[float, float, float]) -> dict:
    """Cores the arm used between two snapshots, and cores all other work on the machine used."""
    wall = last[0] - first[0]
    ours = (last[1] - first[1]) / wall
    return {"cores": ours, "others_cores": max((last[2] - first[2]) / wall - ours, 0.0)}


def steady_rate(points: list[tuple[float, int]], warm: int, steps: int, batch: int):
    """Samples/s between the first point at or past step `warm` and the last before the end."""
    window = [(t, s) for t, s in points if warm <= s < steps]
    if len(window) < 2 or window[-1][0] <= window[0][0]:
        return None
    (t0, s0), (t1, s1) = window[0], window[-1]
    return (s1 - s0) * batch / (t1 - t0)


# ----------------------------------------------------------------------------- (a), (b), (b'), (c)


class HeadReports:
    """The head's progress reports in a run's metrics.jsonl, read as the file grows.

    Each is (orchestrator's timestamp, training steps done).
    """

    def __init__(self, path: Path) -> None:
        self.tail = JsonlTail(path)
        self.points: list[tuple[float, int]] = []

    def read(self) -> list[tuple[float, int]]:
        for rec in self.tail.new():
            if rec.get("agent") == HEAD and "steps" in rec and "eval" not in rec:
                self.points.append((rec["t"], int(rec["steps"])))
        return self.points


def run_processes(sets: list[str], steps: int, warm: int, batch: int, workdir: Path) -> dict:
    """One `synthgrad run` of the chain; steady rate from metrics.jsonl, cores from /proc."""
    runs = Path(tempfile.mkdtemp(dir=workdir))
    overrides = [f"run.steps={steps}", f"run.metrics_every_s={METRICS_EVERY_S}", *sets]
    cmd = [*synthgrad_command(), "run", str(TOPOLOGY), "--json", "--quiet", "--no-plots", "--runs-dir", str(runs)]
    cmd += [arg for item in overrides for arg in ("--set", item)]
    deadline = time.monotonic() + 120 + 2.0 * steps
    pids: list[int] = []  # the orchestrator and the agents, once all have registered
    reports: HeadReports | None = None
    samples: list[tuple[int, tuple]] = []  # (head's steps so far, snapshot of the run's CPU)
    with Child(cmd) as child:
        while child.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{' '.join(cmd)} ran past its deadline")
            time.sleep(0.1)
            run_dir = next(runs.iterdir(), None)
            if run_dir is None:
                continue
            if not pids:  # agents.json is written once every agent has registered
                try:
                    agents = json.loads((run_dir / "agents.json").read_text())["agents"]
                except (FileNotFoundError, json.JSONDecodeError):
                    continue
                pids = [child.pid, *(entry["pid"] for entry in agents.values())]
                reports = HeadReports(run_dir / "metrics.jsonl")
            points = reports.read()
            samples.append((points[-1][1] if points else 0, snapshot(pids)))
        summary = child.last_json()
    points = HeadReports(Path(summary["run_dir"]) / "metrics.jsonl").read()
    inside = [snap for head_steps, snap in samples if warm <= head_steps < steps]
    return {
        "samples_per_s": steady_rate(points, warm, steps, batch),
        "end_to_end_samples_per_s": summary["samples_per_s"],
        **(
            usage(inside[0], inside[-1])
            if len(inside) >= 2
            else {"cores": None, "others_cores": None}
        ),
        "test_accuracy": summary["metrics"].get("test_accuracy"),
        "wall_s": summary["wall_s"],
        "registered_s": summary["timings"].get("registered_s"),
    }


# ----------------------------------------------------------------------------- (d), (e')


def plan_for(sets: list[str], steps: int) -> RunPlan:
    return plan_run(load_topology(TOPOLOGY, [f"run.steps={steps}", *sets]))


def build_cores(plan: RunPlan) -> dict[str, AgentCore]:
    """Every agent of the plan built in this process (as agents.local.run_locally does)."""
    return {
        name: build_core(plan.agents[name])
        for name in plan.order
    }


def run_local(sets: list[str], steps: int, warm: int, batch: int) -> dict:
    """The chain in this process through LocalRunner; clocks read at the source's batches."""
    runner = LocalRunner(build_cores(plan_for(sets, steps)))
    source, produce = runner.source, runner.source.produce
    marks: dict[int, tuple[float, float, float]] = {}

    def timed_produce() -> bool:
        # LocalRunner drains every queue before it asks for the next batch, so when the
        # source has made k batches, step k-1 has been through every agent and back.
        if source.steps in (warm, steps):
            marks.setdefault(source.steps, snapshot())
        return produce()

    source.produce = timed_produce
    t0 = time.perf_counter()
    runner.run()
    total = time.perf_counter() - t0
    first, last = marks[warm], marks[steps]
    return {
        "samples_per_s": (steps - warm) * batch / (last[0] - first[0]),
        "end_to_end_samples_per_s": steps * batch / total,
        **usage(first, last),
        "test_accuracy": runner.evaluations()[-1]["test_accuracy"],
    }


# ----------------------------------------------------------------------------- (e)


def run_plain(sets: list[str], steps: int, warm: int, batch: int) -> dict:
    """Plain backprop: the chain's modules in one nn.Sequential, one Adam, one loop."""
    chain = PlainChain(plan_for(sets, steps))
    t0 = time.perf_counter()
    for step in range(steps):
        if step == warm:
            first = snapshot()
        chain.train_step()
    last = snapshot()
    accuracy = chain.accuracy()
    return {
        "samples_per_s": (steps - warm) * batch / (last[0] - first[0]),
        "end_to_end_samples_per_s": steps * batch / (time.perf_counter() - t0),
        **usage(first, last),
        "test_accuracy": accuracy,
    }


# ----------------------------------------------------------------------------- SG cost


def sg_cost(base: list[str], iterations: int) -> dict:
    """Milliseconds per step of d2's training step and of its SG model, one torch thread."""
    torch.set_num_threads(1)
    plan = plan_for([*base, "link_defaults.mode=dni"], 1)
    core = build_cores(plan)["d2"]
    (sender,) = core.senders.values()
    width = core.plan.in_shapes["in"][0]
    batch = plan.topology.run.batch_size
    x, g = torch.randn(batch, width), torch.randn(batch, width) * 1e-3
    times = {"layer": 0.0, "predict": 0.0, "regress": 0.0, "adam": 0.0, "adam_fused": 0.0}
    fused = torch.optim.Adam(core.agent.module.parameters(), lr=1e-9, fused=True)
    for i in range(-3, iterations):  # three untimed warm-up rounds
        t0 = time.perf_counter()
        inputs = {"in": x.clone().requires_grad_(True)}
        out = core.agent.forward(inputs)["out"]
        torch.autograd.backward(out, g)
        t1 = time.perf_counter()
        core.optimizer.step()
        t2 = time.perf_counter()
        fused.step()
        t3 = time.perf_counter()
        core.optimizer.zero_grad(set_to_none=True)
        sender.synthetic_gradient(i, out.detach(), None)
        t4 = time.perf_counter()
        sender.on_target(i, g)
        t5 = time.perf_counter()
        if i >= 0:
            times["layer"] += t2 - t0
            times["adam"] += t2 - t1
            times["adam_fused"] += t3 - t2
            times["predict"] += t4 - t3
            times["regress"] += t5 - t4
    ms = {k: 1e3 * v / iterations for k, v in times.items()}
    sg = ms["predict"] + ms["regress"]
    return {
        "threads": 1,
        "width": width,
        "layer_ms": ms["layer"],
        "sg_predict_ms": ms["predict"],
        "sg_regress_ms": ms["regress"],
        "sg_ms": sg,
        "sg_over_layer": sg / ms["layer"],
        "adam_step_ms": ms["adam"],
        "adam_fused_step_ms": ms["adam_fused"],
        "dni_over_locked_ceiling": CORES * ms["layer"] / (ms["layer"] + sg),
    }


# ----------------------------------------------------------------------------- main


def measure(arm: str, base: list[str], steps: int, warm: int, batch: int, workdir: Path) -> dict:
    _label, where, threads, arm_sets = ARMS[arm]
    sets = [*base, *arm_sets]
    if where == "processes":
        return run_processes(sets, steps, warm, batch, workdir)
    torch.set_num_threads(threads)
    if arm == "bp-1p":
        return run_plain(sets, steps, warm, batch)
    return run_local(sets, steps, warm, batch)


def summarise(runs: list[dict]) -> dict:
    """Medians over the quiet runs of an arm, or over all its runs when none was quiet."""
    quiet = [r for r in runs if r["others_cores"] is not None and r["others_cores"] <= QUIET]
    chosen = quiet or runs
    out = {}
    for key in runs[0]:
        values = [r[key] for r in chosen if r.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["quiet_runs"] = len(quiet)
    return out


def fmt(value, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def report_text(report: dict) -> str:
    arms, sg = report["arms"], report["sg_cost"]
    arm_rows = [
        [a["label"], a["where"], a["threads"], fmt(a["samples_per_s"]),
         fmt(a["end_to_end_samples_per_s"]), fmt(a["cores"], ".2f"),
         fmt(a["others_cores"], ".2f"), f"{a['quiet_runs']}/{len(a['runs'])}",
         fmt(a["test_accuracy"], ".3f")]
        for a in arms.values()
    ]  # fmt: skip
    ratio_rows = [
        [r["name"], fmt(r["value"], ".2f"), fmt(r["target"], ".1f") if r["target"] else "-",
         {True: "yes", False: "no", None: "-"}[r["met"]]]
        for r in report["ratios"]
    ]  # fmt: skip
    pieces = [
        ("d2 training step (forward, backward, Adam)", "layer_ms"),
        ("SG prediction (forward, no grad)", "sg_predict_ms"),
        ("SG regression (forward, MSE backward, Adam)", "sg_regress_ms"),
        ("SG total per step", "sg_ms"),
        ("Adam step inside the layer step (torch default)", "adam_step_ms"),
        ("the same Adam step with fused=True", "adam_fused_step_ms"),
    ]
    sg_rows = [
        [text, fmt(sg[key], ".1f"), fmt(sg[key] / sg["layer_ms"], ".2f")] for text, key in pieces
    ]
    arm_head = ["arm", "where", "threads", "steady samples/s", "end to end samples/s",
                "cores (ours)", "cores (others)", "quiet runs", "test acc"]  # fmt: skip
    width = sg["width"]
    return "\n\n".join([
        f"{report['steps']} steps per arm, steady window from step {report['warmup_steps']}, "
        f"batch {report['batch_size']}; medians of {report['repeats']} repeat(s), taken over the "
        f"quiet runs (other work used <= {QUIET} cores) where an arm had any, else over all",
        table(arm_head, arm_rows, "llrrrrrrr"),
        table(["ratio of steady samples/s", "value", "target", "met"], ratio_rows, "lrrl"),
        table([f"SG cost, d2 {width} -> {width}, 1 thread", "ms/step", "vs layer step"], sg_rows),
        f"ceiling of DNI / locked across processes on {CORES} cores from these: "
        f"{CORES} x layer / (layer + SG) = {sg['dni_over_locked_ceiling']:.2f}",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="100 steps per arm, layers of 256: a smoke test for CI"
    )
    parser.add_argument("--steps", type=int, help="training steps per arm (default 300, quick 100)")
    parser.add_argument("--repeats", type=int, default=1, help="measure every arm this many times")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help=f"before each arm wait up to S seconds for other work to use <= {QUIET} cores",
    )
    parser.add_argument(
        "--json", action="store_true", help="also print the report as one JSON line"
    )
    args = parser.parse_args()
    exit_on_sigterm()
    steps = args.steps or (100 if args.quick else 300)
    warm = max(steps // 10, 3)
    if steps <= warm + 2:
        parser.error("--steps must be at least 6")
    base = QUICK_SETS if args.quick else []
    run = load_topology(TOPOLOGY).run
    batch = run.batch_size
    report = {
        **header(__file__, args.quick),
        "machine": machine(),
        "topology": str(TOPOLOGY.relative_to(REPO)),
        "steps": steps,
        "warmup_steps": warm,
        "batch_size": batch,
        "eval_batch_size": run.eval_batch_size,
        "repeats": args.repeats,
        "wait_quiet_s": args.wait_quiet,
        "overrides": base,
    }
    names = list(ARMS)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as workdir:
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                log(f"[{r + 1}/{args.repeats}] {ARMS[name][0]} ...")
                busy = wait_until_quiet(args.wait_quiet, QUIET)
                t0 = time.perf_counter()
                runs[name].append(measure(name, base, steps, warm, batch, Path(workdir)))
                took = time.perf_counter() - t0
                runs[name][-1]["others_before"] = busy
                log(f"    {fmt(runs[name][-1]['samples_per_s'])} samples/s ({took:.0f} s)")
    log("SG micro-timer ...")
    report["sg_cost"] = sg_cost(base, 10 if args.quick else 50)
    report["arms"] = {
        name: {
            "label": ARMS[name][0],
            "where": ARMS[name][1],
            "threads": ARMS[name][2],
            **summarise(runs[name]),
            "runs": runs[name],
        }
        for name in names
    }
    report["ratios"] = []
    for title, num, den, target in RATIOS:
        a, b = report["arms"][num]["samples_per_s"], report["arms"][den]["samples_per_s"]
        value = a / b if a and b else None
        met = None if target is None or value is None else value >= target
        report["ratios"].append(
            {"name": title, "arms": [num, den], "value": value, "target": target, "met": met}
        )
    report["machine"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    finish(report, report_text(report), args.json)


if __name__ == "__main__":
    sys.exit(main())
