"""`synthgrad status` and `synthgrad stop`: look at, or end, a run from another terminal.

Both read the run's status.json (orchestrator/status.py says why a file).  `status` draws
it as a rich table (one row per agent, one per SG interface), `--watch` redraws it every
second until the run ends, `--json` prints the document for scripts.  `stop` sends the run's
orchestrator SIGINT, the same path as Ctrl-C (a last checkpoint, every agent's final
weights, summary.json; `synthgrad run` itself exits 130), and waits until status.json says
the run has ended.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from pathlib import Path

from .progress import clock
from .status import ENDED, LIVE, newest_run, read_status

EXIT_CONFIG = 2
WIDE = 180  # columns of the table when stdout is not a terminal
STOP_TIMEOUT_S = 60.0  # a last checkpoint round may take 10 s, the agents' stop 2 s more

EXAMPLES = {
    "status": """examples:
  synthgrad status                      # the newest run under ./runs
  synthgrad status runs/mnist-dni-20261203-101500 --watch
  synthgrad status --json | jq '.agents.l2.sg_cosine'""",
    "stop": """examples:
  synthgrad stop                        # the newest run under ./runs
  synthgrad stop runs/mnist-dni-20261203-101500 --timeout 120""",
}


def _run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir) if args.run_dir is not None else newest_run(Path(args.runs_dir))


def _fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def render(doc: dict):
    """The status document as rich renderables: a header line, the agents and SG tables."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    state = doc["state"]
    steps = f"step {doc.get('steps', 0)}/{doc.get('budget') or '?'}"
    head = [f"{doc['run_id']}", state, steps, f"elapsed {clock(doc.get('elapsed_s') or 0)}"]
    if doc.get("eta_s") is not None:
        head.append(f"ETA {clock(doc['eta_s'])}")
    if doc.get("samples_per_s") is not None:
        head.append(f"{doc['samples_per_s']:,.0f} samples/s")
    if doc.get("test_accuracy") is not None:
        head.append(f"test acc {100 * doc['test_accuracy']:.2f}%")
    if doc.get("exit_code") is not None:
        head.append(f"exit {doc['exit_code']}")
    age = time.time() - doc.get("updated_at", time.time())
    colour = {"training": "green", "failed": "red", "lost": "red", "interrupted": "yellow"}.get(state, "")
    title = Text("  |  ".join(head), style=colour)
    if state == "lost":
        title.append(f"\norchestrator pid {doc.get('orchestrator_pid')} is gone: the run ended without a summary "
                     f"(last update {age:.0f} s ago; continue it with synthgrad run --resume {doc['run_dir']})")
    agents = Table(title=None, header_style="bold", expand=False)
    many_hosts = len({row.get("host") for row in doc["agents"].values()} | {doc.get("host")}) > 1
    columns = [("agent", "left"), ("state", "left"), ("pid", "right")] + ([("host", "left")] if many_hosts else [])
    columns += [(c, "right") for c in ("step", "tick", "steps/s", "msg in/s", "out/s", "queued", "held", "parked",
                                        "stale", "loss", "SG loss", "SG cos", "rejects", "restarts")]
    for name, justify in columns:
        agents.add_column(name, justify=justify, no_wrap=True)
    for name, row in doc["agents"].items():
        tick = _fmt(row.get("clock")) + (f" /{row['tick_every']}" if (row.get("tick_every") or 1) > 1 else "")
        cells = [name, row.get("state", "-"), _fmt(row.get("pid"))] + ([_fmt(row.get("host"))] if many_hosts else [])
        cells += [_fmt(row.get("steps")), tick, _fmt(row.get("steps_per_s"), ".1f"), _fmt(row.get("messages_in_per_s"), ".0f"),
                  _fmt(row.get("messages_out_per_s"), ".0f"), _fmt(row.get("queued")), _fmt(row.get("held")),
                  _fmt(row.get("parked")), _fmt(row.get("staleness"), ".2f"), _fmt(row.get("loss"), ".4f"),
                  _fmt(row.get("sg_loss"), ".3g"), _fmt(row.get("sg_cosine"), ".3f"), _fmt(row.get("rejected")),
                  _fmt(row.get("restarts"))]
        agents.add_row(*cells, style="red" if row.get("state") in ("restarting", "failed") else None)
    parts = [title, agents]
    if doc.get("links"):
        links = Table(title="synthetic gradients (hosted at)", header_style="bold", title_justify="left")
        for name in ("link", "host", "SG loss", "cosine", "norm ratio", "staleness (steps)"):
            links.add_column(name, justify="left" if name in ("link", "host") else "right", no_wrap=True)
        for label, row in doc["links"].items():
            links.add_row(label, row.get("host", "-"), _fmt(row.get("loss")), _fmt(row.get("cosine"), ".3f"),
                          _fmt(row.get("norm_ratio"), ".3f"), _fmt(row.get("staleness"), ".2f"))
        parts.append(links)
    return Group(*parts)


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    try:
        run_dir = _run_dir(args)
        doc = read_status(run_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"synthgrad status: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if args.json:
        from .rundir import dumps

        print(dumps(doc), flush=True)
        return 0
    # A pipe or a log has no width: wide enough for every column rather than squeezed to 80.
    console = Console() if sys.stdout.isatty() else Console(width=WIDE)
    if not args.watch:
        console.print(render(doc))
        return 0
    from rich.live import Live

    try:
        with Live(render(doc), console=console, auto_refresh=False, transient=False) as live:
            while doc["state"] in LIVE:
                time.sleep(args.interval)
                try:
                    doc = read_status(run_dir)
                except (FileNotFoundError, ValueError):
                    continue  # a rename in flight elsewhere (not here: writes are atomic)
                live.update(render(doc), refresh=True)
    except KeyboardInterrupt:
        return 130
    return 0


def _is_orchestrator(pid: int) -> bool:
    """Whether `pid` still runs a synthgrad command (a pid may be reused after a crash)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): trust the pid
        return True
    return b"synthgrad" in cmdline


def cmd_stop(args: argparse.Namespace) -> int:
    try:
        run_dir = _run_dir(args)
        doc = read_status(run_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"synthgrad stop: {err}", file=sys.stderr)
        return EXIT_CONFIG
    name = doc["run_id"]
    if doc["state"] in ENDED or doc["state"] == "lost":
        print(f"synthgrad stop: run {name} is not running ({doc['state']}, exit code {doc.get('exit_code')})", file=sys.stderr)
        return 1
    if doc.get("host") != socket.gethostname():
        print(f"synthgrad stop: run {name} runs on host {doc.get('host')!r}: run synthgrad stop there", file=sys.stderr)
        return 1
    pid = doc["orchestrator_pid"]
    if not _is_orchestrator(pid):
        print(f"synthgrad stop: pid {pid} of run {name} is not a synthgrad process any more", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGINT)
    print(f"stopping run {name} (SIGINT to pid {pid}): last checkpoint, final weights, summary.json", file=sys.stderr)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            doc = read_status(run_dir)
        except (FileNotFoundError, ValueError):
            continue
        if doc["state"] in ENDED:
            print(f"stopped {name} at step {doc.get('steps')}; summary: {doc.get('summary')} "
                  f"(synthgrad run exited {doc.get('exit_code')})")
            return 0
        if doc["state"] == "lost":
            print(f"synthgrad stop: the orchestrator of {name} exited without writing its summary", file=sys.stderr)
            return 1
    print(f"synthgrad stop: run {name} did not end within {args.timeout:g} s (raise --timeout; "
          f"kill -TERM {pid} ends it without waiting for a checkpoint)", file=sys.stderr)
    return 1


def add_status_parsers(verbs) -> None:
    """`synthgrad status` and `synthgrad stop` (added to the CLI's verbs)."""
    fmt = argparse.RawDescriptionHelpFormatter
    status = verbs.add_parser("status", help="show what a run's agents are doing (live or ended)",
                              epilog=EXAMPLES["status"], formatter_class=fmt)
    status.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run directory (default: the newest under --runs-dir)")
    status.add_argument("--runs-dir", default="runs", help="where to look for the newest run (default: runs)")
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds until the run ends")
    status.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between redraws (default 1)")
    status.add_argument("--json", action="store_true", help="print status.json (with orchestrator_alive) as one object")
    status.set_defaults(func=cmd_status)
    stop = verbs.add_parser("stop", help="stop a running run cleanly (as Ctrl-C would)", epilog=EXAMPLES["stop"], formatter_class=fmt)
    stop.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run directory (default: the newest under --runs-dir)")
    stop.add_argument("--runs-dir", default="runs", help="where to look for the newest run (default: runs)")
    stop.add_argument("--timeout", type=float, default=STOP_TIMEOUT_S, metavar="S", help=f"seconds to wait for the end (default {STOP_TIMEOUT_S:g})")
    stop.set_defaults(func=cmd_stop)
