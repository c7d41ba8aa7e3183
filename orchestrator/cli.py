"""`synthgrad`: one program, one verb per task (run, status, stop, plot, compose, agents, place,
simulate, keys)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from .config import ConfigError, load_topology

EXIT_CONFIG = 2


def _print_json(data: dict) -> None:
    from .rundir import dumps

    print(dumps(data), flush=True)


def _listed(counts: dict[str, dict[str, int]]) -> str:
    """`{"l2": {"shape": 3, "run": 1}}` as `l2: run 1, shape 3` (agents in order, then "; ")."""
    return "; ".join(f"{n}: " + ", ".join(f"{k} {c}" for k, c in sorted(by.items())) for n, by in counts.items())


def _stopped_early(signum, _frame) -> None:
    """SIGTERM before a supervisor takes over (parsing, planning, start-up): no agent exists
    yet, so the command just says so and exits 143; `finally` blocks still run."""
    print(f"synthgrad run: stopped by {signal.Signals(signum).name} before the run started", file=sys.stderr)
    raise SystemExit(128 + signum)


class _Skipped(BaseException):
    """A signal while the trace and plots are written (BaseException: no `except Exception`
    of a plotting library may swallow it)."""


def _skip(signum, _frame) -> None:
    raise _Skipped(signal.Signals(signum).name)


def _after_run(run_dir: Path, plan, t0_ns: int, no_plots: bool) -> None:
    """The run's trace.json (under --trace) and its plots, once its results are written and
    status.json says it has ended; neither may fail the run, and a SIGINT or SIGTERM now
    (a second Ctrl-C, `kill`) skips what is left instead of killing the command."""
    previous = {s: signal.signal(s, _skip) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if plan.topology.run.trace:
            from .plots import run_mode
            from .trace import merge_trace

            try:
                mode = run_mode(json.loads((run_dir / "config.json").read_text()))
                path = merge_trace(run_dir, plan.order, t0_ns, {"mode": mode, "run_id": run_dir.name})
                print(f"trace: {path} (open in https://ui.perfetto.dev)" if path else "trace: no agent wrote a trace", file=sys.stderr)
            except (OSError, ValueError, KeyError, TypeError) as err:
                print(f"warning: the trace could not be merged: {err}", file=sys.stderr)
        if not no_plots:
            from .plots import write_run_plots

            try:
                write_run_plots(run_dir)
            except Exception as err:  # a plot is a report: the run's results are written already
                print(f"warning: plots not drawn: {type(err).__name__}: {err}", file=sys.stderr)
    except _Skipped as why:
        print(f"synthgrad run: {why} while the trace and plots were written: skipped what was left "
              f"(the results are written; redraw with synthgrad plot {run_dir})", file=sys.stderr)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def cmd_run(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    t0_ns = time.monotonic_ns()  # the trace's origin: the same instant as t0
    if (args.file is None) == (args.resume is None):
        print("synthgrad run: give a topology file, or --resume RUN_DIR (not both)", file=sys.stderr)
        return EXIT_CONFIG
    resume = None
    args.set = [*args.set, *(["run.trace=true"] if args.trace else []), *(["run.tensorboard=true"] if args.tensorboard else [])]
    try:
        if args.resume is not None:
            from .resume import prepare_resume

            topology, resume, args.set = prepare_resume(args.resume, args.set)
            args.file = args.resume / "topology.toml"
        else:
            topology = load_topology(args.file, args.set)
    except ConfigError as err:
        print(f"synthgrad run: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if topology.run.tensorboard:
        from .tensorboard import check_available

        missing = check_available()
        if missing:
            print(f"synthgrad run: run.tensorboard: {missing}", file=sys.stderr)
            return EXIT_CONFIG
    # Plan before anything starts: a topology that cannot run leaves no process behind.
    from .plan import plan_run

    try:
        plan = plan_run(topology)
    except ConfigError as err:
        print(f"synthgrad run: {args.file}: {err}", file=sys.stderr)
        return EXIT_CONFIG
    placement = None
    if args.fabric or args.pin:
        try:
            placement = _place_for_run(topology, plan, args)
        except ValueError as err:  # unknown preset or method, or agents that do not fit
            print(f"synthgrad run: {err}", file=sys.stderr)
            return EXIT_CONFIG
    from .keys import prepare_transport

    try:  # tcp: the bind address and the key files are checked before anything starts
        keys = prepare_transport(topology.run, plan.order)
    except ValueError as err:  # KeyFileError too: it names the file and the fix
        print(f"synthgrad run: {err}", file=sys.stderr)
        return EXIT_CONFIG
    # The fork server imports torch while this process writes the run directory.
    from .launcher import ForkServerLauncher

    launcher = ForkServerLauncher()
    launcher.warm()
    from .progress import Progress
    from .reports import drop_warnings
    from .rundir import RunDir
    from .supervisor import Interrupted, RunFailed, Supervisor
    if resume is not None:
        run_dir = RunDir.reopen(args.resume)
        print(f"resuming {run_dir.path} from checkpoint {resume['id']} (step {resume['step']})", file=sys.stderr)
        from .trace import set_aside

        for moved in set_aside(run_dir.path):  # an earlier session's trace is not this one's
            print(f"the earlier session's trace is now {moved}", file=sys.stderr)
    else:
        run_dir = RunDir(args.runs_dir or topology.run.runs_dir, topology.run.name)
        shutil.copy(args.file, run_dir.path / "topology.toml")
    if placement is not None:
        run_dir.write_json("placement.json", placement)
    run_dir.write_json(
        "config.json",
        {
            "file": str(args.file),
            "overrides": args.set,
            "run": topology.run.to_wire(),
            "source": plan.source,
            "terminals": plan.terminals,
            "order": plan.order,
            "specs": {name: agent.to_wire() for name, agent in plan.agents.items()},
        },
    )
    progress = Progress(plan.samples_per_step, enabled=not args.quiet, started_at=t0, env_steps=plan.closed_loop)
    supervisor = Supervisor(plan, run_dir, launcher, progress, started_at=t0, keys=keys, resume=resume)

    def ended(state: str, code: int, summary: dict) -> int:
        """After every end: summary.json, then status.json says it is over, then the trace
        and plots (reports of results already written)."""
        path = run_dir.write_json("summary.json", summary)
        supervisor.publish_end(state, code, path, summary)
        _after_run(run_dir.path, plan, t0_ns, args.no_plots)
        return code

    try:
        summary = supervisor.run()
    except RunFailed as err:
        progress.close()
        print(f"synthgrad run: {err}", file=sys.stderr)
        return ended("failed", 1, {"error": str(err), **supervisor.summary()})
    except Interrupted as err:
        progress.close()
        code = ended("interrupted", 128 + err.signum, {"interrupted": signal.Signals(err.signum).name, **supervisor.summary()})
        resumable = any((run_dir.path / "checkpoints").glob("*/manifest.json"))
        hint = f" (continue with: synthgrad run --resume {run_dir.path})" if resumable else " (no checkpoint was complete: nothing to resume)"
        print(f"synthgrad run: {err}; all agents stopped{hint}", file=sys.stderr)
        return code
    finally:
        # The fork server goes with the run.  Every agent is stopped already, so a second
        # Ctrl-C now would only interrupt this wait with a traceback: it is ignored.
        quiet = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            launcher.close()
        finally:
            for s, handler in quiet.items():
                signal.signal(s, handler)
    progress.close()
    ended("finished", 0, summary)
    acc = summary["metrics"].get("test_accuracy")
    mean_return = summary["metrics"].get("charts/episodic_return_mean")
    print(f"run dir: {summary['run_dir']}")
    if plan.closed_loop:
        window = plan.agents[plan.source].params["window"]
        print(
            f"{summary['steps']} env steps in {summary['wall_s']:.1f} s ({summary['samples_per_s']:,.0f} SPS), "
            f"mean return of the last {window} episodes {mean_return:.1f}"
        )
    else:
        print(
            f"{summary['steps']} steps in {summary['wall_s']:.1f} s ({summary['samples_per_s']:,.0f} samples/s)"
            + (f", test accuracy {100 * acc:.2f}%" if acc is not None else "")
        )
    rejects = {n: a["rejected"] for n, a in summary["agents"].items() if a.get("rejected")}
    if summary.get("control_rejected"):
        rejects["orchestrator (control)"] = summary["control_rejected"]
    if rejects:
        print(f"rejected messages (dropped, counted by reason): {_listed(rejects)}")
    for fault in summary["faults"]:
        back = f"rejoined after {fault['rejoined_after_s']:.1f} s" if "rejoined_after_s" in fault else "not back"
        print(f"fault: {fault['agent']} {fault['cause']} at {fault['t']:.1f} s; {back}", file=sys.stderr)
    for line in drop_warnings(summary["agents"]):
        print(line, file=sys.stderr)
    nonfinite = {n: a["nonfinite"] for n, a in summary["agents"].items() if a.get("nonfinite")}
    if nonfinite:
        print(f"warning: non-finite values (run.on_nonfinite = {topology.run.on_nonfinite!r}): {_listed(nonfinite)}", file=sys.stderr)
    if args.json:
        _print_json(summary)
    return 0


def _place_for_run(topology, plan, args) -> dict:
    """Place the agents on the modelled fabric; with --pin, give each agent a host CPU.

    Agents that are neighbours on the fabric share a CPU (fabric.cpu_plan), so the host
    run mirrors the placement the model chose.
    """
    from .fabric import cpu_plan, place_topology

    placement = place_topology(topology, args.fabric or "wormhole_n150", args.place_method, seconds=2.0)
    record = placement.as_dict()
    if args.pin:
        cpus = cpu_plan(placement, sorted(os.sched_getaffinity(0)))
        for name, cpu in cpus.items():
            plan.agents[name] = dataclasses.replace(plan.agents[name], cpu=cpu)
        record["cpus"] = cpus
    return record


def cmd_agents(args: argparse.Namespace) -> int:
    from ..agents.registry import known_kinds

    kinds = known_kinds()
    if args.json:
        _print_json({"kinds": kinds})
    else:
        width = max(map(len, kinds))
        for name, origin in kinds.items():
            print(f"{name:<{width}}  {origin}")
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    from .compose import export_composed

    try:
        out = export_composed(args.run_dir, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"synthgrad compose: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"saved {out} (load with torch.export.load(path).module())")
    if args.json:
        _print_json({"out": str(out), "run_dir": str(args.run_dir)})
    return 0


EXAMPLES = {
    "run": """examples:
  synthgrad run examples/mnist_dni.toml
  synthgrad run examples/mnist_cdni.toml --set run.steps=500 --set run.seed=3 --json
  synthgrad run examples/mnist_backprop.toml --set link_defaults.mode=dni
  synthgrad run examples/mnist_dni.toml --fabric wormhole_n150 --pin
  synthgrad run examples/mnist_dni.toml --set run.steps=300 --trace --tensorboard
  synthgrad run --resume runs/mnist-dni-20261124-101500 --set run.steps=4000""",
    "compose": """examples:
  synthgrad compose runs/mnist-dni-20261124-101500 --out model.pt
  python -c "import torch; m = torch.export.load('model.pt').module(); print(m)\"""",
    "agents": """examples:
  synthgrad agents
  synthgrad agents --json""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthgrad",
        description="Neural-network agents as processes, decoupled by synthetic gradients.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    fmt = argparse.RawDescriptionHelpFormatter

    run = verbs.add_parser("run", help="run a topology file", epilog=EXAMPLES["run"], formatter_class=fmt)
    run.add_argument("file", type=Path, nargs="?", help="topology file (TOML)")
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run from its newest checkpoint")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key, e.g. run.steps=100")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object on the last line")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--runs-dir", help="where run directories go (default: run.runs_dir, 'runs')")
    run.add_argument("--fabric", metavar="PRESET", help="place the agents on this modelled fabric and record placement.json")
    run.add_argument("--place-method", default="greedy", metavar="M", help="placement method for --fabric (default: greedy)")
    run.add_argument("--pin", action="store_true", help="pin each agent process to a host CPU following the placement")
    run.add_argument("--trace", action="store_true", help="record every agent's spans into RUN_DIR/trace.json (Perfetto; run.trace)")
    run.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to RUN_DIR/tensorboard (needs synthgrad[tensorboard])")
    run.add_argument("--no-plots", action="store_true", help="do not draw RUN_DIR/plots/*.png at the end")
    run.set_defaults(func=cmd_run)

    compose = verbs.add_parser(
        "compose", help="join a finished run's agents into one torch module", epilog=EXAMPLES["compose"], formatter_class=fmt
    )
    compose.add_argument("run_dir", type=Path, help="a run directory (runs/NAME-TIME)")
    compose.add_argument("--out", type=Path, required=True, help="file to save the exported program to")
    compose.add_argument("--json", action="store_true", help="machine-readable output")
    compose.set_defaults(func=cmd_compose)

    agents = verbs.add_parser("agents", help="list the agent kinds that can be found", epilog=EXAMPLES["agents"], formatter_class=fmt)
    agents.add_argument("--json", action="store_true", help="machine-readable output")
    agents.set_defaults(func=cmd_agents)

    # Imported plainly: a broken import here must fail loudly, not hide the verbs.
    from .fabric.cli import add_place_parser, add_simulate_parser

    add_place_parser(verbs)
    add_simulate_parser(verbs)
    from .keys import add_keys_parser

    add_keys_parser(verbs)
    from .plot_cli import add_plot_parser
    from .status_cli import add_status_parsers

    add_status_parsers(verbs)
    add_plot_parser(verbs)
    return parser


def _log_to_stderr() -> None:
    """The supervisor's log lines (synthgrad.orchestrator) on stderr, each marked as ours."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("orchestrator: %(message)s"))
    logger = logging.getLogger("synthgrad.orchestrator")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `synthgrad` console script."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, _stopped_early)  # until a supervisor installs its own
    _log_to_stderr()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
