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
from .status import ENDED, LIVE, is_orchestrator, newest_run, read_status

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


def _load(args: argparse.Namespace, verb: str) -> tuple[Path, dict] | None:
    """The run directory (given, or the newest under --runs-dir) and its status; None, with
    the problem on stderr, when there is none to read."""
    try:
        run_dir = Path(args.run_dir) if args.run_dir is not None else newest_run(Path(args.runs_dir))
        return run_dir, read_status(run_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"synthgrad {verb}: {err}", file=sys.stderr)
        return None


def _fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


# The agents table: header, justification, (row key, number format).  Under FULL_WIDTH
# columns (an 80-column terminal) only the NARROW ones are drawn.
COLUMNS = (
    ("agent", "left", ("agent", "")), ("state", "left", ("state", "")), ("pid", "right", ("pid", "")),
    ("host", "left", ("host", "")), ("step", "right", ("steps", "")), ("tick", "right", ("tick", "")),
    ("steps/s", "right", ("steps_per_s", ".1f")), ("msg in/s", "right", ("messages_in_per_s", ".0f")),
    ("out/s", "right", ("messages_out_per_s", ".0f")), ("queued", "right", ("queued", "")),
    ("held", "right", ("held", "")), ("parked", "right", ("parked", "")), ("stale", "right", ("staleness", ".2f")),
    ("loss", "right", ("loss", ".4f")), ("SG loss", "right", ("sg_loss", ".3g")), ("SG cos", "right", ("sg_cosine", ".3f")),
    ("rejects", "right", ("rejected", "")), ("restarts", "right", ("restarts", "")),
)
NARROW = {"agent": "agent", "state": "state", "step": "step", "steps/s": "st/s", "queued": "queue", "stale": "stale",
          "loss": "loss", "SG cos": "SG cos", "rejects": "rej", "restarts": "rst"}  # header -> its short form
FULL_WIDTH = 150


def render(doc: dict, width: int = WIDE):
    """The status document as rich renderables: a header line, the agents and SG tables;
    `width`: the terminal's columns (fewer columns under FULL_WIDTH)."""
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
    if doc.get("mean_return") is not None:  # a run with an env agent (docs/rl.md)
        head.append(f"mean return {doc['mean_return']:.1f}")
    if doc.get("exit_code") is not None:
        head.append(f"exit {doc['exit_code']}")
    age = time.time() - doc.get("updated_at", time.time())
    colour = {"training": "green", "failed": "red", "lost": "red", "interrupted": "yellow"}.get(state, "")
    title = Text("  |  ".join(head), style=colour)
    if state == "lost":
        hint = f"continue it with synthgrad run --resume {doc['run_dir']}" if doc.get("resumable") else "no checkpoint was complete: it cannot be resumed"
        title.append(f"\norchestrator pid {doc.get('orchestrator_pid')} is gone: the run ended without a summary "
                     f"(last update {age:.0f} s ago; {hint})")
    from rich import box

    many_hosts = len({row.get("host") for row in doc["agents"].values()} | {doc.get("host")}) > 1
    narrow = width < FULL_WIDTH
    # Narrow: no vertical rules, one space between columns, short headers.
    agents = Table(header_style="bold", box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD, collapse_padding=narrow, pad_edge=not narrow)
    columns = [c for c in COLUMNS if not (narrow and c[0] not in NARROW) and (many_hosts or c[0] != "host")]
    for name, justify, _ in columns:
        agents.add_column(NARROW[name] if narrow else name, justify=justify, no_wrap=True)
    for name, row in doc["agents"].items():
        row = {**row, "agent": name, "tick": _fmt(row.get("clock")) + (f" /{row['tick_every']}" if (row.get("tick_every") or 1) > 1 else "")}
        cells = [_fmt(row.get(key), spec) if spec else _fmt(row.get(key)) for _, _, (key, spec) in columns]
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

    if (found := _load(args, "status")) is None:
        return EXIT_CONFIG
    run_dir, doc = found
    if args.json:
        from .rundir import dumps

        print(dumps(doc), flush=True)
        return 0
    # A pipe or a log has no width: wide enough for every column rather than squeezed to 80.
    console = Console() if sys.stdout.isatty() else Console(width=WIDE)
    if not args.watch:
        console.print(render(doc, console.width))
        return 0
    from rich.live import Live

    def updates():
        """The status after each interval, until the run has ended."""
        nonlocal doc
        while doc["state"] in LIVE:
            time.sleep(args.interval)
            try:
                doc = read_status(run_dir)
            except (FileNotFoundError, ValueError):
                continue  # e.g. a file a run made before this version rewrote: try again
            yield doc

    try:
        if not console.is_terminal:  # a pipe or a log: one table per interval, in sequence
            console.print(render(doc, console.width))
            for now in updates():
                console.print(render(now, console.width))
            return 0
        with Live(render(doc, console.width), console=console, auto_refresh=False, transient=False) as live:
            for now in updates():
                live.update(render(now, console.width), refresh=True)
    except KeyboardInterrupt:
        return 130
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    if (found := _load(args, "stop")) is None:
        return EXIT_CONFIG
    run_dir, doc = found
    name = doc["run_id"]
    if doc["state"] in ENDED:
        print(f"synthgrad stop: run {name} is not running ({doc['state']}, exit code {doc['exit_code']})", file=sys.stderr)
        return 1
    if doc["state"] == "lost":
        print(f"synthgrad stop: run {name} is not running: its orchestrator (pid {doc.get('orchestrator_pid')}) died without ending it", file=sys.stderr)
        return 1
    if doc.get("host") != socket.gethostname():
        print(f"synthgrad stop: run {name} runs on host {doc.get('host')!r}: run synthgrad stop there", file=sys.stderr)
        return 1
    pid = doc["orchestrator_pid"]
    if not is_orchestrator(pid):
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
    print(f"synthgrad stop: run {name} is still {doc['state']} after {args.timeout:g} s (it goes on stopping; "
          f"synthgrad status {run_dir} shows when it has ended)", file=sys.stderr)
    return 1


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds > 0."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def add_status_parsers(verbs) -> None:
    """`synthgrad status` and `synthgrad stop` (added to the CLI's verbs)."""
    fmt = argparse.RawDescriptionHelpFormatter
    status = verbs.add_parser("status", help="show what a run's agents are doing (live or ended)",
                              epilog=EXAMPLES["status"], formatter_class=fmt)
    status.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run directory (default: the newest under --runs-dir)")
    status.add_argument("--runs-dir", default="runs", help="where to look for the newest run (default: runs)")
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds until the run ends")
    status.add_argument("--interval", type=_seconds, default=1.0, metavar="S", help="seconds between redraws (default 1)")
    status.add_argument("--json", action="store_true", help="print status.json (with orchestrator_alive) as one object")
    status.set_defaults(func=cmd_status)
    stop = verbs.add_parser("stop", help="stop a running run cleanly (as Ctrl-C would)", epilog=EXAMPLES["stop"], formatter_class=fmt)
    stop.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a run directory (default: the newest under --runs-dir)")
    stop.add_argument("--runs-dir", default="runs", help="where to look for the newest run (default: runs)")
    stop.add_argument("--timeout", type=_seconds, default=STOP_TIMEOUT_S, metavar="S", help=f"seconds to wait for the end (default {STOP_TIMEOUT_S:g})")
    stop.set_defaults(func=cmd_stop)
