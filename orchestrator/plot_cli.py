"""`synthgrad plot`: a run's plots, an overlay of runs, or the timeline of a trace, as PNGs.

`orchestrator/cli.py` calls `add_plot_parser`; this module also runs alone:
`python -m synthgrad.orchestrator.plot_cli plot RUN_DIR`. Matplotlib is imported only when
the handler runs, so building the parser stays cheap. Errors a user can fix go to stderr as
`synthgrad plot: ...` with exit status 2; on success each written path is printed, and with
`--json` the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_USER = 2
DEFAULT_OVERLAY = Path("overlay.png")

EXAMPLES = """examples:
  synthgrad plot runs/mnist-dni-20261124-101500
  synthgrad plot runs/mnist-backprop-20261124-100000 runs/mnist-dni-20261124-101500 runs/mnist-cdni-20261124-103000 --out modes.png
  synthgrad plot --timeline runs/mnist-dni-20261124-101500/trace.json --window-ms 20
  synthgrad simulate examples/mnist_dni.toml --fabric wormhole_n150 --trace sim.json && synthgrad plot --timeline sim.json

One run directory: (re)writes its plots/accuracy_loss.png, sg_quality.png and throughput.png.
Several (or --out): one overlay of their test accuracy and task loss, against steps and wall
time (default out: overlay.png here). --timeline: a Gantt chart of a Chrome trace, one row per
track (default out: the trace's name with .png; default window: the middle 50 ms, or the
whole trace if shorter; --window-ms inf for all of it)."""


def add_plot_parser(verbs) -> argparse.ArgumentParser:
    """Add `plot`: `synthgrad plot RUN_DIR [RUN_DIR ...] [--out FILE]` or
    `synthgrad plot --timeline TRACE.json [--window-ms MS] [--from-ms MS] [--out FILE]`."""
    p = verbs.add_parser(
        "plot",
        help="plot a run, overlay several runs, or draw a trace's timeline",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write PNG plots of finished (or stopped) runs, or a timeline of a trace file.",
    )
    p.add_argument(
        "run_dirs", type=Path, nargs="*", metavar="RUN_DIR", help="run directories (runs/NAME-TIME)"
    )
    p.add_argument(
        "--out", type=Path, metavar="FILE", help="the PNG to write (overlay or timeline)"
    )
    p.add_argument(
        "--timeline",
        type=Path,
        metavar="TRACE.json",
        help="draw this Chrome/Perfetto trace instead",
    )
    p.add_argument(
        "--window-ms",
        type=float,
        metavar="MS",
        help="--timeline: length of the time window (default 50; inf: all)",
    )
    p.add_argument(
        "--from-ms",
        type=float,
        metavar="MS",
        help="--timeline: where the window starts (default: centred)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.set_defaults(func=cmd_plot)
    return p


class _Usage(ValueError):
    """A combination of arguments that does not make a request."""


def _check_out(out: Path | None) -> None:
    """--out must name a .png file in a folder that exists."""
    if out is None:
        return
    if out.suffix.lower() != ".png" or out.is_dir():
        raise _Usage(f"--out {out}: give a file name ending in .png (the plots are PNG)")
    if not out.resolve().parent.is_dir():
        raise _Usage(f"--out {out}: the folder {out.parent} does not exist (create it first)")


def _written(args: argparse.Namespace) -> list[Path]:
    """Do what the arguments ask; the paths written."""
    _check_out(args.out)
    if args.timeline is not None:
        if args.run_dirs:
            raise _Usage("give run directories or --timeline TRACE.json, not both")
        from .timeline import timeline_png

        if not args.timeline.is_file():
            raise _Usage(
                f"{args.timeline}: no such trace file (write one with `synthgrad simulate FILE --fabric PRESET --trace OUT.json`)"
            )
        out = args.out or args.timeline.with_suffix(".png")
        window = None if args.window_ms is None else args.window_ms / 1e3
        start = None if args.from_ms is None else args.from_ms / 1e3
        return [timeline_png(args.timeline, out, window_s=window, start_s=start)]
    if args.window_ms is not None or args.from_ms is not None:
        raise _Usage("--window-ms and --from-ms go with --timeline TRACE.json")
    if not args.run_dirs:
        raise _Usage(
            "give a run directory (runs/NAME-TIME), several to overlay, or --timeline TRACE.json"
        )
    from .plots import overlay, write_run_plots

    if len(args.run_dirs) == 1 and args.out is None:
        return write_run_plots(args.run_dirs[0])
    return [overlay(args.run_dirs, args.out or DEFAULT_OVERLAY)]


def cmd_plot(args: argparse.Namespace) -> int:
    """Handler of `synthgrad plot`."""
    try:
        written = _written(args)
    except (ValueError, OSError) as err:  # FileNotFoundError too: the messages name the path
        print(f"synthgrad plot: {err}", file=sys.stderr)
        return EXIT_USER
    for path in written:
        print(f"wrote {path}")
    if args.json:
        print(json.dumps({"written": [str(p) for p in written]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m synthgrad.orchestrator.plot_cli plot ...`."""
    parser = argparse.ArgumentParser(
        prog="synthgrad", description="Plots of synthgrad runs and traces."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    add_plot_parser(verbs)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
