"""Plots of a run (accuracy and loss, synthetic-gradient quality, throughput) and an overlay of runs.

The input is a run directory (orchestrator/rundir.py). `metrics.jsonl` holds one report per
line: `t` (wall seconds since the run directory was made), `agent`, `step` and the values;
an evaluation report carries `eval`, `train_steps`, `test_accuracy` and `test_loss`.
Every key may be missing and every value may be null (a non-finite number), and the last
line of a killed run may be cut short: what cannot be read is skipped, and a panel left
without data says "no data" on its axes instead of staying blank. `config.json` gives the
run's mode (`run_mode`); `summary.json`, when the run finished, its final test accuracy.

Wall time on the plots is seconds since the first report (the agents' reports at START), so
the agents' start-up does not shift one run against another in an overlay. A resumed run
appends to metrics.jsonl with its clock at zero again; its reports continue the time axis
from the last report before the stop (the time the run was stopped is not on the axis).

Figures are built on `matplotlib.figure.Figure`, not pyplot: no global state, no display
backend (Agg writes the PNGs), and the figures can be read back by tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

PLOTS_DIR = "plots"
DPI = 100
# Quantities of `sg_quality.png`: metrics key prefix, axis title, log scale when all positive.
SG_QUANTITIES = (
    ("sg_loss", "SG regression loss", True),
    ("sg_cosine", "cosine(SG, its gradient target)", False),
    ("sg_norm_ratio", "|SG| / |gradient target|", True),
    ("sg_staleness", "staleness (steps from activation to target)", False),
)
NOT_A_RUN = "is not a run directory (no metrics.jsonl); give a directory `synthgrad run` wrote, e.g. runs/NAME-TIME"


def _num(value: Any) -> float | None:
    """`value` as a finite float, or None (missing, null, a string, a bool, NaN).

    Exact type checks (JSON gives no subclasses): this runs for every point of every line."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    return float(value) if kind is int else None


def read_metrics(path: str | Path) -> list[dict]:
    """The reports of a metrics.jsonl, in file order; lines that are not a JSON object (a last
    line cut short by a kill, a blank line) are skipped."""
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _read_json(path: Path) -> dict:
    """A JSON object file, or {} when it is missing, partial or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_mode(config: dict) -> str:
    """The run's mode from its config.json: "backprop", "dni", "cdni" (dni whose SG model sees
    the labels), "unlocked", "none" (a cut), "mixed: a+b", or "mode unknown".

    Context links (label routes of cDNI), the source's data links (mode "none": the source
    learns nothing) and an env agent's action links say nothing about the mode and are left out.
    """
    specs = config.get("specs")
    if not isinstance(specs, dict):
        return "mode unknown"
    modes = set()
    for spec in specs.values():
        links = (
            (spec.get("in_links") or []) + (spec.get("out_links") or [])
            if isinstance(spec, dict)
            else []
        )
        for link in links:
            if not isinstance(link, dict) or link.get("context") or link.get("feedback"):
                continue  # an env's action link (docs/rl.md) is "none" by design, too
            mode = str(link.get("mode", "?"))
            if mode == "none" and link.get("from_source"):
                continue
            sg = link.get("sg") if isinstance(link.get("sg"), dict) else {}
            modes.add("cdni" if mode == "dni" and sg.get("context") else mode)
    if not modes:
        return "mode unknown"
    return modes.pop() if len(modes) == 1 else "mixed: " + "+".join(sorted(modes))


@dataclass
class RunData:
    """What the plots read of one run directory.

    `train` and `evals` rows are the metrics.jsonl reports with `wall` (seconds since the first
    report, see the module docstring) added; `train` is per agent, in the order agents first
    reported.
    """

    path: Path
    label: str  # the directory's name: NAME-STAMP
    mode: str
    train: dict[str, list[dict]] = field(default_factory=dict)
    evals: list[dict] = field(default_factory=list)
    final_accuracy: float | None = None
    order: list[str] = field(default_factory=list)  # config.json's agent order, if any

    @property
    def title(self) -> str:
        acc = (
            f", final test accuracy {100 * self.final_accuracy:.2f}%"
            if self.final_accuracy is not None
            else ""
        )
        return f"{self.label} ({self.mode}{acc})"


def load_run(run_dir: str | Path) -> RunData:
    """Read a run directory. FileNotFoundError if it does not exist, ValueError if it holds no
    metrics.jsonl; never an error for a partial or empty one, or a missing config or summary."""
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path}: no such run directory (give the one `synthgrad run` printed after 'run dir:')"
        )
    if not (path / "metrics.jsonl").is_file():
        raise ValueError(f"{path} {NOT_A_RUN}")
    config = _read_json(path / "config.json")
    run = RunData(path, path.resolve().name, run_mode(config))
    if isinstance(config.get("order"), list):
        run.order = [str(name) for name in config["order"]]
    run.final_accuracy = _num(
        (_read_json(path / "summary.json").get("metrics") or {}).get("test_accuracy")
    )
    offset, last, origin = 0.0, None, None
    for row in read_metrics(path / "metrics.jsonl"):
        t = _num(row.get("t"))
        if t is not None:
            if last is not None and t + offset < last:  # a resumed run: its clock began again
                offset = last - t
            last = t + offset
            origin = last if origin is None else origin
            row["wall"] = last - origin
        if "eval" in row:
            run.evals.append(row)
        else:
            run.train.setdefault(str(row.get("agent", "?")), []).append(row)
    rank = {name: i for i, name in enumerate(run.order)}  # agents in topology order: stable colours
    run.train = dict(sorted(run.train.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    return run


def _step(row: dict) -> float | None:
    """Training steps of a report: `train_steps` (evaluation) or `steps`, else its `step`."""
    steps = _num(row.get("train_steps" if "eval" in row else "steps"))
    return _num(row.get("step")) if steps is None else steps


def _series(rows: Iterable[dict], x: str, y: str) -> tuple[list[float], list[float]]:
    """(xs, ys) of the rows where both are numbers; x is "step" (training steps) or "wall"."""
    xs, ys = [], []
    for row in rows:
        xv = _step(row) if x == "step" else _num(row.get(x))
        yv = _num(row.get(y))
        if xv is not None and yv is not None:
            xs.append(xv)
            ys.append(yv)
    return xs, ys


def _no_data(ax, what: str) -> None:
    """Say on the axes that nothing was drawn, and why; no ticks of an empty 0..1 range."""
    ax.text(
        0.5,
        0.5,
        f"no data\n({what})",
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="0.45",
    )
    ax.set_xticks([])
    ax.set_yticks([])


def _finish(ax, title: str, xlabel: str, ylabel: str, drawn: bool, missing: str, **legend) -> None:
    """Title and label a panel; a legend (with `legend`'s options) and a grid if anything was
    drawn, else the "no data" note saying what is `missing`."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if drawn:
        ax.legend(fontsize=8, **legend)
        ax.grid(alpha=0.3)
    else:
        _no_data(ax, missing)


def _figure(size: tuple[float, float]) -> Figure:
    # Fixed margins: constrained layout measured every label and took most of a second per
    # figure on a loaded machine; these fit the titles and tick labels drawn here.
    fig = Figure(figsize=size)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.9, hspace=0.35, wspace=0.18)
    return fig


def _colour(i: int) -> str:
    return f"C{i % 10}"


X_LABELS = {"step": "training steps", "wall": "wall time since the first report (s)"}


def _by_agent(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(str(row.get("agent", "?")), []).append(row)
    return out


def accuracy_loss_figure(run: RunData) -> Figure:
    """2x2: accuracy (test; train where reported) and task loss, against steps and wall time."""
    fig = _figure((12, 8))
    axes = fig.subplots(2, 2)
    evals = _by_agent(run.evals)
    names = list(dict.fromkeys([*evals, *run.train]))
    several = (
        len([n for n in names if n in evals or any("loss" in r for r in run.train.get(n, ()))]) > 1
    )
    for row, (test_key, train_key, what) in enumerate(
        (("test_accuracy", "train_accuracy", "accuracy"), ("test_loss", "loss", "task loss"))
    ):
        for col, x in enumerate(("step", "wall")):
            ax = axes[row, col]
            drawn = False
            for i, name in enumerate(names):
                suffix = f" ({name})" if several else ""
                for rows, key, style, kind in (
                    (run.train.get(name, ()), train_key, {"lw": 1, "alpha": 0.6}, "train"),
                    (evals.get(name, ()), test_key, {"lw": 2, "marker": "o", "ms": 4}, "test"),
                ):
                    xs, ys = _series(rows, x, key)
                    if xs:
                        ax.plot(xs, ys, color=_colour(i), label=f"{kind}{suffix}", **style)
                        drawn = True
            _finish(ax, what, X_LABELS[x], what, drawn, f"no {test_key} or {train_key} recorded")
    fig.suptitle(f"{run.title}: accuracy and loss")
    return fig


def sg_quality_figure(run: RunData) -> Figure:
    """2x2: per link, SG loss, cosine, norm ratio and staleness against the reporter's steps."""
    fig = _figure((12, 8))
    axes = fig.subplots(2, 2).ravel()
    # link -> the agents reporting it; a link reported by two agents gets two lines.
    reporters: dict[str, set[str]] = {}
    for agent, rows in run.train.items():
        for row in rows:
            for key in row:
                if key.startswith("sg_") and "." in key:
                    reporters.setdefault(key.split(".", 1)[1], set()).add(agent)
    rank = {name: i for i, name in enumerate(run.train)}
    links = sorted(
        reporters, key=lambda link: [rank.get(end, len(rank)) for end in link.split("->")]
    )
    for ax, (prefix, title, log) in zip(axes, SG_QUANTITIES, strict=True):
        drawn, positive = False, True
        for i, link in enumerate(links):
            for agent in sorted(reporters[link]):
                xs, ys = _series(run.train[agent], "step", f"{prefix}.{link}")
                if not xs:
                    continue
                label = link if len(reporters[link]) == 1 else f"{link} @{agent}"
                ax.plot(xs, ys, color=_colour(i), lw=1.2, label=label)
                drawn, positive = True, positive and min(ys) > 0
        ax.set_title(title)
        ax.set_xlabel(X_LABELS["step"])
        if drawn:
            if log and positive:
                ax.set_yscale("log")
            ax.legend(fontsize=8, title="link")
            ax.grid(alpha=0.3)
        else:
            _no_data(
                ax,
                f"no {prefix}.SRC->DST recorded"
                + (f": a {run.mode} run reported no SG link" if not links else ""),
            )
    fig.suptitle(f"{run.title}: synthetic-gradient quality per link")
    return fig


def throughput_figure(run: RunData) -> Figure:
    """Steps/s per agent, and messages in (solid) and out (dashed) per s, against wall time."""
    fig = _figure((12, 7))
    top, bottom = fig.subplots(2, 1)
    drawn_top = drawn_bottom = False
    for i, (agent, rows) in enumerate(run.train.items()):
        xs, ys = _series(rows, "wall", "steps_per_s")
        if xs:
            top.plot(xs, ys, color=_colour(i), lw=1.2, label=agent)
            drawn_top = True
        for key, style in (("messages_in_per_s", "-"), ("messages_out_per_s", "--")):
            xs, ys = _series(rows, "wall", key)
            if xs:
                bottom.plot(
                    xs, ys, style, color=_colour(i), lw=1.2, label=f"{agent} {key.split('_')[1]}"
                )
                drawn_bottom = True
    for ax, drawn, title, unit, what in (
        (top, drawn_top, "training steps per second", "steps/s", "no steps_per_s recorded"),
        (
            bottom,
            drawn_bottom,
            "messages per second (solid: in, dashed: out)",
            "messages/s",
            "no messages_in_per_s or messages_out_per_s recorded",
        ),
    ):
        _finish(ax, title, X_LABELS["wall"], unit, drawn, what, ncol=2)
    fig.suptitle(f"{run.title}: throughput")
    return fig


RUN_PLOTS = {
    "accuracy_loss.png": accuracy_loss_figure,
    "sg_quality.png": sg_quality_figure,
    "throughput.png": throughput_figure,
}


def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    # Light compression: several times faster than the default, and plots stay small.
    fig.savefig(tmp, dpi=DPI, format="png", pil_kwargs={"compress_level": 1})
    tmp.replace(path)
    return path


def write_run_plots(run_dir: str | Path) -> list[Path]:
    """Write `RUN_PLOTS` under `run_dir/plots/` and return their paths.

    accuracy_loss.png: test and train accuracy and task loss against steps and wall time;
    sg_quality.png: per link, SG loss, cosine, norm ratio and staleness against steps;
    throughput.png: steps/s and messages/s per agent against wall time;
    learning_curve.png (a run with an env agent): episodic return against env steps and wall
    time (orchestrator/rl_plots.py).
    Every file is written, a panel without data saying so. FileNotFoundError for a missing
    directory, ValueError for one without metrics.jsonl.
    """
    run = load_run(run_dir)
    out = run.path / PLOTS_DIR
    out.mkdir(exist_ok=True)
    paths = [_save(build(run), out / name) for name, build in RUN_PLOTS.items()]
    from . import rl_plots  # it builds on this module's helpers

    if rl_plots.is_rl(run):
        paths.append(_save(rl_plots.learning_curve_figure(run), out / "learning_curve.png"))
    return paths


def overlay_figure(run_dirs: Iterable[str | Path]) -> Figure:
    """2x2: test accuracy and task loss (solid: train, dashed with markers: test) of several runs
    against steps and wall time, one colour per run; the legend on the first panel names each
    run and its mode. ValueError naming a path that is not a run directory."""
    runs = []
    for d in run_dirs:
        if not Path(d).is_dir():
            raise ValueError(
                f"{d}: no such run directory (give the one `synthgrad run` printed after 'run dir:')"
            )
        runs.append(load_run(d))
    if not runs:
        raise ValueError("no run directories to overlay")
    fig = _figure((12, 8))
    axes = fig.subplots(2, 2)
    panels = (
        ("test accuracy", (("test_accuracy", True),)),
        ("task loss", (("loss", False), ("test_loss", True))),
    )
    first: dict[int, Any] = {}  # run -> its first line: the legend names every run drawn
    for row, (what, keys) in enumerate(panels):
        for col, x in enumerate(("step", "wall")):
            ax = axes[row, col]
            drawn = False
            for i, run in enumerate(runs):
                label = f"{run.label} ({run.mode})"
                for key, is_test in keys:
                    source = (
                        run.evals if is_test else [r for rows in run.train.values() for r in rows]
                    )
                    for rows in _by_agent(source).values():
                        xs, ys = _series(rows, x, key)
                        if not xs:
                            continue
                        style = ("o--" if len(keys) > 1 else "o-") if is_test else "-"
                        (line,) = ax.plot(
                            xs, ys, style, color=_colour(i), lw=1.5, ms=4, label=label
                        )
                        first.setdefault(i, line)
                        label, drawn = "_nolegend_", True  # one legend entry per run and panel
            ax.set_title(what + (" (solid: train, dashed: test)" if len(keys) > 1 else ""))
            ax.set_xlabel(X_LABELS[x])
            ax.set_ylabel(what)
            if drawn:
                ax.grid(alpha=0.3)
            else:
                _no_data(ax, f"no {' or '.join(k for k, _ in keys)} in any run")
    if first:  # on the first panel, even for a run that reported no accuracy
        handles = [first[i] for i in sorted(first)]
        axes[0, 0].legend(handles, [h.get_label() for h in handles], fontsize=8, title="run (mode)")
    fig.suptitle(f"{len(runs)} runs: " + ", ".join(run.mode for run in runs))
    return fig


def legend_labels(fig: Figure) -> list[str]:
    """The texts of every legend in `fig` (what a reader of the overlay sees named)."""
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def overlay(run_dirs: Iterable[str | Path], out: str | Path) -> Path:
    """Write `overlay_figure(run_dirs)` to `out` (PNG) and return its path."""
    out = Path(out)
    return _save(overlay_figure(run_dirs), out)
