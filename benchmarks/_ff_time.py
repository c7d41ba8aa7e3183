"""Time to accuracy: wall seconds to 97% and 98% MNIST test accuracy, six ways, in one run.

Arms, on a 4-layer FCN (3 hidden layers of W, classifier), W = 256 (the paper's net) and a
compute-heavy W where arithmetic, not messaging, dominates: 1024 by default (`--widths`); at
2048 (`--widths 2048`, capped at 600 steps) six arms take most of an hour on 2 cores, so
docs/results.md has three of them (`--time-arms`):

  cdni-proc  cDNI across processes (synthgrad run, one torch thread per agent)
  dni-proc   DNI across processes
  bp-proc    locked backprop across processes
  bp-1p      backprop in one process, a plain torch loop at 2 threads (nn.Sequential, one Adam)
  dni-1p     DNI in one process at 2 threads: LocalRunner, all agent cores with in-memory queues,
             the way public DNI libraries run every module in one program
  cdni-1p    cDNI likewise

Torch at 2 threads slows down many times when a third process takes a core (a 2-thread arm
took 89 s instead of 3 s to 97% beside a niced experiment), so on a shared machine run with
--wait-quiet.  Every arm evaluates on the full 10k test set every E steps (the same E and the same
evaluation work in every arm: its cost is inside every figure) and stops once it has reached
98% or its step cap.  The clock starts at the first training batch: process start-up
(about 3 s) is outside, as module construction is for the in-process arms.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from _common import Child, JsonlTail, log, synthgrad_command, table, wait_until_quiet
from _ff_topologies import fcn
from _plain import PlainChain
from synthgrad.agents.runtime.build import build_core
from synthgrad.agents.runtime.local import LocalRunner
from synthgrad.orchestrator.config import load_topology
from synthgrad.orchestrator.plan import RunPlan, plan_run

THRESHOLDS = (0.97, 0.98)
QUIET = 0.25  # cores of other work under which the machine counts as quiet
ARMS = ("cdni-proc", "dni-proc", "bp-proc", "bp-1p", "dni-1p", "cdni-1p")
METHOD = {"cdni": "cdni", "dni": "dni", "bp": "backprop"}


class Curve:
    """(seconds since the first batch, training steps, test accuracy) per evaluation."""

    def __init__(self) -> None:
        self.points: list[tuple[float, int, float]] = []

    def add(self, seconds: float, steps: int, accuracy: float) -> None:
        self.points.append((seconds, steps, accuracy))

    def reached(self, threshold: float) -> tuple[float, int] | None:
        return next(((t, s) for t, s, a in self.points if a >= threshold), None)

    @property
    def done(self) -> bool:
        return self.reached(THRESHOLDS[-1]) is not None


def _topology(arm: str, width: int, steps: int, eval_every: int, workdir: Path) -> Path:
    method = METHOD[arm.split("-")[0]]
    path = workdir / f"time-w{width}-{arm}.toml"
    path.write_text(
        fcn(path.stem, 4, [method] * 3, steps=steps, eval_every=eval_every, width=width)
    )
    return path


def _plan(path: Path) -> RunPlan:
    return plan_run(load_topology(path, []))


def run_processes(path: Path, steps: int, workdir: Path) -> Curve:
    """`synthgrad run`, stopped (SIGTERM: a clean stop) once the last threshold is reached."""
    runs = workdir / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    cmd = [*synthgrad_command(), "run", str(path), "--json", "--quiet", "--no-plots", "--runs-dir", str(runs)]
    curve, origin, tail = Curve(), None, None
    deadline = time.monotonic() + 300 + 2.0 * steps
    with Child(cmd) as child:
        while child.poll() is None and not curve.done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path.name} ran past its deadline")
            time.sleep(0.2)
            if tail is None:
                new = set(runs.iterdir()) - before if runs.exists() else set()
                if not new:
                    continue
                tail = JsonlTail(next(iter(new)) / "metrics.jsonl")
            for rec in tail.new():
                if origin is None and rec["agent"] != "head" and rec.get("steps", 0) >= 1:
                    origin = rec["t"]  # the source's first report comes with its first batch
                if "eval" in rec and origin is not None:
                    curve.add(rec["t"] - origin, rec["train_steps"], rec["test_accuracy"])
    return curve


def run_local(path: Path, threads: int) -> Curve:
    """Every agent core in this process (LocalRunner), stopped once the last threshold is reached."""
    torch.set_num_threads(threads)
    plan = _plan(path)
    cores = {
        n: build_core(plan.agents[n]) for n in plan.order
    }
    curve, clock = Curve(), {}

    def stamp(msg) -> None:  # evaluations get their time as they arrive
        if "eval" in msg.meta and "t0" in clock:
            curve.add(
                time.perf_counter() - clock["t0"],
                msg.meta["train_steps"],
                msg.meta["test_accuracy"],
            )

    runner = LocalRunner(cores, on_report=stamp)
    produce = runner.source.produce

    def produce_until_done() -> bool:
        clock.setdefault("t0", time.perf_counter())
        return False if curve.done else produce()

    runner.source.produce = produce_until_done
    runner.run()
    return curve


def run_plain(path: Path, threads: int) -> Curve:
    """Plain backprop: the plan's modules in one nn.Sequential, one Adam, at `threads` threads."""
    torch.set_num_threads(threads)
    run = (plan := _plan(path)).topology.run
    chain = PlainChain(plan)
    curve, t0 = Curve(), time.perf_counter()
    for step in range(1, run.steps + 1):
        chain.train_step()
        if step % run.eval_every == 0 or step == run.steps:
            curve.add(time.perf_counter() - t0, step, chain.accuracy())
            if curve.done:
                break
    return curve


def run_arm(arm: str, width: int, steps: int, eval_every: int, workdir: Path) -> Curve:
    path = _topology(arm, width, steps, eval_every, workdir)
    if arm.endswith("-proc"):
        return run_processes(path, steps, workdir)
    if arm == "bp-1p":
        return run_plain(path, threads=2)
    return run_local(path, threads=2)


def time_to_accuracy(
    quick: bool,
    workdir: Path,
    widths: tuple[int, ...] = (256, 1024),
    wait_quiet_s: float = 0.0,
    only: tuple[str, ...] = ARMS,
) -> dict:
    """The section's arms for each width; a table of seconds (and steps) to each threshold.

    With `wait_quiet_s` each arm first waits (up to that long) for the rest of the machine to
    go quiet; the cores other work used just before it started are recorded with the arm.
    """
    # width: (step cap, evaluation every E steps).  The paper's width runs 3000 steps at most;
    # wider nets learn in fewer steps but each costs (width / 256)^2 as much.
    settings = (
        {64: (40, 20)}
        if quick
        else {w: (3000 if w <= 256 else 1000 if w <= 1024 else 600, 100) for w in widths}
    )
    arms = ("cdni-proc", "bp-1p", "cdni-1p") if quick else tuple(a for a in ARMS if a in only)
    results: dict[str, dict] = {}
    rows = []
    for width, (steps, every) in settings.items():
        for arm in arms:
            others = wait_until_quiet(wait_quiet_s, QUIET)
            log(f"  time w{width} {arm} (others busy: {others}) ...")
            curve = run_arm(arm, width, steps, every, workdir)
            hits = {f"{int(100 * t)}": curve.reached(t) for t in THRESHOLDS}
            last = curve.points[-1] if curve.points else (None, None, None)
            results[f"w{width}-{arm}"] = {
                "width": width,
                "arm": arm,
                "cap": steps,
                "eval_every": every,
                "points": curve.points,
                "reached": hits,
                "final_accuracy": last[2],
                "others_cores_before": others,
                # test error against steps, for the section's plot
                "curve": [(s, 100 * (1 - a)) for _, s, a in curve.points],
            }
            log(f"  time w{width} {arm}: {hits}")
            cells = [
                f"{t:.1f} s ({s})" if (t, s) != (None, None) else "not reached"
                for t, s in ((h or (None, None)) for h in hits.values())
            ]
            rows.append(
                [f"{width}", arm, *cells, f"{100 * last[2]:.2f}%" if last[2] is not None else "-"]
            )
    text = table(
        ["width", "arm", "to 97% (steps)", "to 98% (steps)", "last accuracy"], rows, "lllll"
    )
    ratios = []
    for width in settings:

        def seconds(arm: str, width: int = width) -> float | None:
            hit = results.get(f"w{width}-{arm}", {}).get("reached", {}).get("97")
            return hit[0] if hit else None

        for num, den, target in (
            ("cdni-proc", "cdni-1p", 0.8),
            ("cdni-proc", "bp-1p", 1.5),
            ("dni-proc", "dni-1p", None),
            ("bp-proc", "bp-1p", None),
        ):
            a, b = seconds(num), seconds(den)
            ratios.append(
                [
                    f"{width}",
                    f"{num} / {den}",
                    f"{a / b:.2f}" if a and b else "-",
                    f"<= {target}" if target else "-",
                ]
            )
    text += "\n\n" + table(["width", "time to 97%", "ratio", "target"], ratios, "llrl")
    return {
        "steps": {str(w): s for w, (s, _) in settings.items()},
        "arms": results,
        "table": text,
        "ratios": ratios,
    }
