"""What `synthgrad run --trace` costs, and the docs pictures of a real timeline.

Both arms in one invocation, alternated (off, on, off, on, ...) so that drift in the
machine's load falls on both: examples/mnist_dni.toml (source, three DNI layers, a head) for
`--steps` steps, `--repeats` pairs.  Each run's steady rate is the median of the head's
reported samples/s after its first quarter of reports (start-up and the first evaluations
are not steady).  The issue's target: tracing on keeps at least 95% of steady samples/s.

Tracing off leaves a no-op call per span (agents/runtime/trace.py `NULL_TRACER`); it cannot
be measured against code without the calls in one run, so it is bounded instead: the cost of
one no-op span (timeit, here) times the spans a step makes (counted in the traced run's
trace.json), against the step time the untraced runs measured.

`--pictures DIR` also writes the docs pictures of docs/watching.md: the timelines of a
locked (backprop) and a DNI chain (their real traces), the plots of a run, an overlay of
backprop, DNI and cDNI runs, and the status table rendered to PNG.

    .venv/bin/python benchmarks/tracing.py                  # 3 pairs of 1500 steps (~5 min)
    .venv/bin/python benchmarks/tracing.py --pictures docs/results
    .venv/bin/python benchmarks/tracing.py --quick --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, exit_on_sigterm, finish, header, log, synthgrad_run, table  # noqa: E402

TOPOLOGY = REPO / "examples" / "mnist_dni.toml"
TARGET = 0.95
RUN_TIMEOUT_S = 900.0


def steady_samples_per_s(run_dir: Path, batch_size: int) -> float:
    """Median of the head's samples/s over its reports after the first quarter."""
    rates = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["agent"] == "head" and "loss" in row and row.get("steps_per_s"):
            rates.append(row["steps_per_s"] * batch_size)
    if not rates:
        raise RuntimeError(f"{run_dir}: the head reported no rate")
    return statistics.median(rates[len(rates) // 4:])


def spans_per_step(run_dir: Path, steps: int) -> float:
    """Spans the agents recorded per training step, all agents together (trace.json)."""
    doc = json.loads((run_dir / "trace.json").read_text())
    return sum(1 for e in doc["traceEvents"] if e["ph"] == "X") / steps


def null_span_ns() -> float:
    """What one span costs with tracing off: the no-op context manager, entered and left."""
    from synthgrad.agents.runtime.trace import NULL_TRACER

    def one() -> None:
        with NULL_TRACER.span("forward", 1):
            pass

    n = 200_000
    return min(timeit.repeat(one, number=n, repeat=5)) / n * 1e9


def _run(steps: int, traced: bool, runs: Path) -> tuple[Path, dict]:
    sets = [f"run.steps={steps}", f"run.eval_every={steps}", f"run.trace={'true' if traced else 'false'}"]
    summary = synthgrad_run(TOPOLOGY, sets, runs, RUN_TIMEOUT_S)
    return Path(summary["run_dir"]), summary


def measure(args, runs: Path) -> dict:
    pairs = []
    for i in range(args.repeats):
        pair = {}
        for traced in (False, True):
            log(f"pair {i + 1}/{args.repeats}: tracing {'on' if traced else 'off'} ({args.steps} steps)")
            run_dir, summary = _run(args.steps, traced, runs)
            batch = json.loads((run_dir / "config.json").read_text())["run"]["batch_size"]
            pair["on" if traced else "off"] = {
                "run_dir": str(run_dir),
                "steady_samples_per_s": steady_samples_per_s(run_dir, batch),
                "samples_per_s": summary["samples_per_s"],
                "test_accuracy": summary["metrics"].get("test_accuracy"),
            }
            if traced:
                pair["on"]["spans_per_step"] = spans_per_step(run_dir, args.steps)
                pair["on"]["trace_mb"] = (run_dir / "trace.json").stat().st_size / 2**20
        pair["ratio"] = pair["on"]["steady_samples_per_s"] / pair["off"]["steady_samples_per_s"]
        pairs.append(pair)
    ratio = statistics.median(p["ratio"] for p in pairs)
    off_rate = statistics.median(p["off"]["steady_samples_per_s"] for p in pairs)
    step_ns = batch / off_rate * 1e9
    per_span = null_span_ns()
    spans = statistics.median(p["on"]["spans_per_step"] for p in pairs)
    return {
        "pairs": pairs,
        "ratio_on_over_off": ratio,
        "met": None if args.quick else ratio >= TARGET,
        "off_bound": {"null_span_ns": per_span, "spans_per_step": spans, "step_ns": step_ns,
                      "fraction_of_step": per_span * spans / step_ns},
    }


def pictures(out: Path, runs: Path, steps: int) -> list[str]:
    """The docs pictures (see the module docstring); returns the files written."""
    from synthgrad.orchestrator.plots import overlay
    from synthgrad.orchestrator.timeline import timeline_png

    out.mkdir(parents=True, exist_ok=True)
    written = []
    dirs = {}
    for example in ("mnist_backprop.toml", "mnist_dni.toml", "mnist_cdni.toml"):
        log(f"pictures: {example} ({steps} steps, traced)")
        sets = [f"run.steps={steps}", f"run.eval_every={max(steps // 4, 1)}", "run.trace=true"]
        summary = synthgrad_run(REPO / "examples" / example, sets, runs, RUN_TIMEOUT_S, plots=True)
        dirs[example] = Path(summary["run_dir"])
    for example, name in (("mnist_backprop.toml", "timeline_backprop.png"), ("mnist_dni.toml", "timeline_dni.png")):
        trace = dirs[example] / "trace.json"
        written.append(str(timeline_png(trace, out / name, window_s=0.06, start_s=training_window(trace))))
    for plot in ("accuracy_loss", "sg_quality", "throughput"):
        target = out / f"watch_{plot}.png"
        shutil.copy(dirs["mnist_cdni.toml"] / "plots" / f"{plot}.png", target)
        written.append(str(target))
    written.append(str(overlay(list(dirs.values()), out / "watch_overlay.png")))
    written.append(str(status_png(dirs["mnist_cdni.toml"], out / "watch_status.png")))
    return written


def training_window(trace: Path, at: float = 0.6) -> float:
    """Where a timeline window over training steps starts (s after the trace's first span):
    just before the head's loss span `at` of the way through training, away from the
    evaluations (whose spans would fill the window instead)."""
    events = [e for e in json.loads(trace.read_text())["traceEvents"] if e["ph"] == "X"]
    first = min(e["ts"] for e in events)
    losses = sorted(e["ts"] for e in events if e["cat"] == "loss")
    return max(losses[int(at * (len(losses) - 1))] - first - 10_000, 0.0) / 1e6


def status_png(run_dir: Path, out: Path) -> Path:
    """`synthgrad status RUN_DIR` as the terminal shows it, drawn into a PNG (monospace)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rich.console import Console
    from synthgrad.orchestrator.status import read_status
    from synthgrad.orchestrator.status_cli import WIDE, render

    console = Console(record=True, width=WIDE, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render(read_status(run_dir)))
    text = console.export_text()
    lines = text.splitlines()
    fig = plt.figure(figsize=(WIDE * 0.075, len(lines) * 0.17 + 0.3), facecolor="#1e1e1e")
    fig.text(0.01, 0.98, text, family="DejaVu Sans Mono", fontsize=8, color="#e0e0e0", va="top")
    fig.savefig(out, dpi=130, facecolor=fig.get_facecolor())
    plt.close(fig)
    return out


def report_text(report: dict) -> str:
    m = report["measure"]
    rows = [[i + 1, f"{p['off']['steady_samples_per_s']:,.0f}", f"{p['on']['steady_samples_per_s']:,.0f}", f"{p['ratio']:.3f}",
             f"{p['on']['spans_per_step']:.1f}", f"{p['on']['trace_mb']:.1f}"] for i, p in enumerate(m["pairs"])]
    text = table(["pair", "off: steady samples/s", "on: steady samples/s", "on / off", "spans per step", "trace.json MB"], rows)
    verdict = {None: "not judged (--quick)", True: "met", False: "missed"}[m["met"]]
    b = m["off_bound"]
    text += (f"\n\nmedian on / off: {m['ratio_on_over_off']:.3f} (target >= {TARGET}): {verdict}\n"
             f"tracing off, bounded: {b['null_span_ns']:.0f} ns per no-op span x {b['spans_per_step']:.1f} spans per step "
             f"= {100 * b['fraction_of_step']:.3f}% of a {b['step_ns'] / 1e6:.2f} ms step")
    if report.get("pictures"):
        text += "\n\npictures: " + ", ".join(report["pictures"])
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training steps per run (default 1500)")
    parser.add_argument("--repeats", type=int, default=3, help="off/on pairs (default 3)")
    parser.add_argument("--pictures", type=Path, metavar="DIR", help="also write the docs pictures into DIR")
    parser.add_argument("--quick", action="store_true", help="one pair of 150 steps: a smoke run")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on the last line")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 150, 1
    exit_on_sigterm()
    report = header(__file__, args.quick)
    report["topology"] = str(TOPOLOGY.relative_to(REPO))
    report["steps"], report["repeats"] = args.steps, args.repeats
    with tempfile.TemporaryDirectory(prefix="sg-tracing-") as tmp:
        runs = Path(tmp)
        report["measure"] = measure(args, runs)
        if args.pictures:
            report["pictures"] = pictures(args.pictures, runs, 400 if args.quick else 1000)
    finish(report, report_text(report), args.json)


if __name__ == "__main__":
    main()
