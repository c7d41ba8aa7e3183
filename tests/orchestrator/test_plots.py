"""Plots of runs, the overlay of runs, the timeline of a trace, and `synthgrad plot`.

Real run directories come from the real CLI, once per module (a DNI and a backprop run of the
MNIST example, a few dozen steps each); the rest uses small hand-written files.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.image import imread
from synthgrad.orchestrator.plot_cli import add_plot_parser
from synthgrad.orchestrator.plots import (
    RUN_PLOTS,
    accuracy_loss_figure,
    legend_labels,
    load_run,
    overlay,
    overlay_figure,
    run_mode,
    sg_quality_figure,
    write_run_plots,
)
from synthgrad.orchestrator.timeline import load_trace, timeline_figure, timeline_png

from ..conftest import EXAMPLES, run_cli

RUN_ARGS = ["--set", "run.steps=80", "--set", "run.eval_every=40", "--quiet"]


def _run(example: str, where: Path) -> Path:
    # Two runs and the first test's plots fit the first test's 300 s (setup counts against it).
    proc = run_cli(["run", str(EXAMPLES / example), *RUN_ARGS], cwd=where, timeout=140, plots=True)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (where / "runs").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """{"dni": run dir, "backprop": run dir}, each made by `synthgrad run` in its own tmp dir."""
    return {
        mode: _run(f"mnist_{mode}.toml", tmp_path_factory.mktemp(mode))
        for mode in ("dni", "backprop")
    }


@pytest.fixture(scope="module")
def sim_trace(tmp_path_factory) -> Path:
    """A simulator trace of the DNI example (`synthgrad simulate --trace`)."""
    where = tmp_path_factory.mktemp("sim")
    out = where / "sim.json"
    args = [
        "simulate",
        str(EXAMPLES / "mnist_dni.toml"),
        "--fabric",
        "wormhole_n150",
        "--seconds",
        "0.5",
        "--trace",
        str(out),
    ]
    proc = run_cli(args, cwd=where, timeout=240)
    assert proc.returncode == 0, proc.stderr
    return out


def plot_cli(*argv: str) -> int:
    """`synthgrad plot ARGV` through a parser of our own (cli.py wires the real one)."""
    parser = argparse.ArgumentParser(prog="synthgrad")
    add_plot_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["plot", *argv])
    return args.func(args)


def assert_picture(path: Path) -> None:
    """`path` is a PNG that decodes and shows something: many colours, not one flat one."""
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    pixels = image[..., :3].reshape(-1, 3)
    assert pixels.std() > 0.05
    assert len(np.unique(np.round(pixels, 2), axis=0)) > 20


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def write_metrics(run_dir: Path, lines: list[str]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    return run_dir


# ---------------------------------------------------------------- real runs


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_run_plots_are_written_and_show_something(runs):
    for mode, run_dir in runs.items():
        paths = write_run_plots(run_dir)
        assert [p.name for p in paths] == list(RUN_PLOTS)
        for path in paths:
            assert path.parent == run_dir / "plots"
            if mode == "backprop" and path.name == "sg_quality.png":
                continue  # four "no data" panels: drawn, but nearly blank by design
            assert_picture(path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_run_is_labelled_with_its_mode_and_a_backprop_run_has_no_sg_data(runs):
    dni, backprop = load_run(runs["dni"]), load_run(runs["backprop"])
    assert (dni.mode, backprop.mode) == ("dni", "backprop")
    assert dni.title.startswith(runs["dni"].name + " (dni")
    fig = sg_quality_figure(dni)
    labels = set(legend_labels(fig))
    assert {"l1->l2", "l2->l3", "l3->head"} <= labels  # one line per link, named by it
    assert not any("no data" in t for t in texts(fig))
    assert "dni" in fig.texts[0].get_text()  # the suptitle names the mode
    assert sum("no data" in t for t in texts(sg_quality_figure(backprop))) == 4
    acc = accuracy_loss_figure(dni)
    assert {"train", "test"} <= set(legend_labels(acc))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_overlay_names_each_run_and_its_mode(runs, tmp_path):
    fig = overlay_figure([runs["backprop"], runs["dni"]])
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels == [f"{runs['backprop'].name} (backprop)", f"{runs['dni'].name} (dni)"]
    assert legend_labels(fig) == labels
    out = overlay([runs["backprop"], runs["dni"]], tmp_path / "modes.png")
    assert out == tmp_path / "modes.png"
    assert_picture(out)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_run_with_a_cut_last_line_and_no_summary_still_plots(runs, tmp_path):
    run_dir = tmp_path / runs["dni"].name
    shutil.copytree(runs["dni"], run_dir)
    (run_dir / "summary.json").unlink()
    text = (run_dir / "metrics.jsonl").read_text()
    cut = text.rindex("\n", 0, len(text) - 1) + 40  # 40 characters into the last line
    (run_dir / "metrics.jsonl").write_text(text[:cut])
    run = load_run(run_dir)
    assert run.final_accuracy is None and run.mode == "dni"
    paths = write_run_plots(run_dir)
    for path in paths:
        assert_picture(path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_cli_plots_one_run_and_overlays_several(runs, tmp_path, capsys, monkeypatch):
    assert plot_cli(str(runs["dni"])) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"wrote {runs['dni'] / 'plots' / name}" for name in RUN_PLOTS]
    monkeypatch.chdir(tmp_path)
    assert plot_cli(str(runs["dni"]), str(runs["backprop"]), "--json") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "wrote overlay.png" and json.loads(out[-1]) == {"written": ["overlay.png"]}
    assert_picture(tmp_path / "overlay.png")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_timeline_of_a_simulator_trace_has_one_row_per_agent_and_link(sim_trace, runs, tmp_path):
    config = json.loads((runs["dni"] / "config.json").read_text())
    fig = timeline_figure(sim_trace)
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    agent_rows = [r.split(" @")[0] for r in rows if "->" not in r]
    assert agent_rows == config["order"]  # the simulator's pid 0, one tid per agent
    assert {"l1->l2", "l2->l3", "l3->head"} <= set(rows)  # pid 1: links
    assert {"F", "B"} <= set(legend_labels(fig))
    out = timeline_png(sim_trace, tmp_path / "sim.png")
    assert_picture(out)
    assert plot_cli("--timeline", str(sim_trace)) == 0
    assert_picture(sim_trace.with_suffix(".png"))


# ---------------------------------------------------------------- hand-written files


def test_run_mode_from_the_links_that_are_not_context_or_data():
    def config(*links: dict) -> dict:
        data = {"mode": "none", "from_source": True, "context": False, "sg": {"context": True}}
        label = {"mode": "none", "from_source": True, "context": True, "sg": {"context": True}}
        return {"specs": {"a": {"in_links": [data, label], "out_links": list(links)}}}

    def link(mode: str, context: bool = False) -> dict:
        return {"mode": mode, "from_source": False, "context": False, "sg": {"context": context}}

    assert run_mode(config(link("backprop"), link("backprop"))) == "backprop"
    assert run_mode(config(link("dni"))) == "dni"
    assert run_mode(config(link("dni", context=True))) == "cdni"
    assert run_mode(config(link("unlocked"))) == "unlocked"
    assert run_mode(config(link("dni"), link("backprop"))) == "mixed: backprop+dni"
    assert run_mode(config(link("none"))) == "none"
    assert run_mode(config()) == "mode unknown"
    assert run_mode({}) == "mode unknown"


def test_partial_metrics_are_read_as_far_as_they_go(tmp_path):
    lines = [
        '{"t": 5.0, "agent": "l1", "step": 0, "steps": 0, "steps_per_s": 0.0}',
        '{"t": 6.0, "agent": "l1", "step": 40, "steps": 40, "steps_per_s": 40.0, "sg_loss.l1->l2": null}',
        '{"t": 6.5, "agent": "head", "step": 40, "eval": 0, "train_steps": 40, "test_accuracy": 0.8}',
        "",
        '{"t": 7.0, "agent": "l1", "step": 80, "steps": true, "steps_per_s": "fast"}',
        # resumed: the clock starts again at zero, the steps go on
        '{"t": 0.5, "agent": "l1", "step": 80, "steps": 80, "steps_per_s": 1e400, "sg_loss.l1->l2": 0.1}',
        '{"t": 1.5, "agent": "l1", "step": 120, "steps": 120, "steps_per_s": 40.0, "sg_loss.l1->l2": 0.05}',
        '{"t": 2.0, "agent": "l1", "st',
    ]
    run = load_run(write_metrics(tmp_path / "killed-20260101-000000", lines))
    assert run.mode == "mode unknown" and run.label == "killed-20260101-000000"
    # the clock of the resumed run continues from the last report before the stop
    assert [r["wall"] for r in run.train["l1"]] == [0.0, 1.0, 2.0, 2.0, 3.0]
    assert [r["wall"] for r in run.evals] == [1.5]
    fig = sg_quality_figure(run)
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [80.0, 120.0]  # the null is skipped
    assert legend_labels(fig)[:1] == ["l1->l2"]
    assert sum("no data" in t for t in texts(fig)) == 3  # cosine, norm ratio, staleness
    assert len(write_run_plots(run.path)) == 3


def test_an_empty_metrics_file_gives_no_data_panels_not_an_error(tmp_path):
    run_dir = write_metrics(tmp_path / "empty", [])
    paths = write_run_plots(run_dir)
    assert all(p.is_file() for p in paths)
    assert sum("no data" in t for t in texts(accuracy_loss_figure(load_run(run_dir)))) == 4


def test_a_missing_run_dir_or_one_without_metrics_is_refused_clearly(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        write_run_plots(tmp_path / "nowhere")
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    with pytest.raises(ValueError, match="not a run directory"):
        write_run_plots(not_a_run)
    good = write_metrics(tmp_path / "good", [])
    with pytest.raises(ValueError, match=f"{not_a_run}.*no metrics.jsonl"):
        overlay([good, not_a_run], tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()
    assert plot_cli(str(not_a_run)) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"synthgrad plot: {not_a_run} is not a run directory")
        and "runs/NAME-TIME" in err
    )
    assert plot_cli(str(good), str(tmp_path / "nowhere"), "--out", str(tmp_path / "o.png")) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert plot_cli() == 2
    assert "give a run directory" in capsys.readouterr().err
    assert plot_cli(str(good), "--window-ms", "5") == 2
    assert "--timeline" in capsys.readouterr().err


def span(kind: str, step: int, ts: float, dur: float, tid: int) -> dict:
    return {
        "name": f"{kind} {step}",
        "cat": kind,
        "ph": "X",
        "ts": ts,
        "dur": dur,
        "pid": 0,
        "tid": tid,
    }


def agents_trace(path: Path, steps: int = 400) -> Path:
    """A trace shaped like a run's: pid 0 "agents", one tid per agent, a "step" span holding
    forward/backward/..., and a flow from each agent's send to the next agent's forward."""
    agents = ["source", "l1", "l2", "head"]
    events = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "agents"}}]
    events += [
        {"name": "thread_name", "ph": "M", "pid": 0, "tid": i, "args": {"name": a}}
        for i, a in enumerate(agents)
    ]
    for k in range(steps):
        for i, _ in enumerate(agents):
            t = k * 10_000.0 + i * 1_000
            events.append(span("step", k, t, 6_000, i))
            for kind, dur in (
                ("forward", 1_000),
                ("backward", 2_000),
                ("optimizer", 500),
                ("send", 200),
            ):
                events.append(span(kind, k, t, dur, i))
                t += dur + 50
            if i + 1 < len(agents):  # the receiver's clock a little behind: the flow still joins
                flow = {"id": f"{k}.{i}", "cat": "msg", "pid": 0}
                events.append({"ph": "s", "ts": t - 200, "tid": i, **flow})
                events.append({"ph": "f", "bp": "e", "ts": t - 300, "tid": i + 1, **flow})
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def test_timeline_of_a_run_trace_shows_a_window_of_its_middle(tmp_path):
    trace = agents_trace(tmp_path / "trace.json")  # 4 s long
    assert len(load_trace(trace).flows) == 400 * 3
    fig = timeline_figure(trace)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["source", "l1", "l2", "head"]
    lo, hi = ax.get_xlim()
    assert hi - lo == pytest.approx(50.0) and lo == pytest.approx((4_000 - 50) / 2, abs=5)  # ms
    assert set(legend_labels(fig)) >= {"forward", "backward", "optimizer", "send", "step"}
    assert any(isinstance(c, LineCollection) for c in ax.collections)  # the flows
    lo, hi = timeline_figure(trace, window_s=0.02, start_s=1.0).axes[0].get_xlim()
    assert (lo, hi) == pytest.approx((1_000, 1_020))
    lo, hi = timeline_figure(trace, window_s=float("inf")).axes[0].get_xlim()
    assert hi - lo == pytest.approx(3_999)
    assert_picture(timeline_png(trace, tmp_path / "t.png"))


def test_a_file_that_is_not_a_trace_is_refused(tmp_path, capsys):
    cases = {
        "text.json": "not json",
        "dict.json": '{"events": []}',
        "empty.json": '{"traceEvents": [{"ph": "M"}]}',
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match="not JSON"):
        timeline_png(tmp_path / "text.json", tmp_path / "x.png")
    with pytest.raises(ValueError, match="traceEvents"):
        timeline_png(tmp_path / "dict.json", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no complete span"):
        timeline_png(tmp_path / "empty.json", tmp_path / "x.png")
    trace = agents_trace(tmp_path / "trace.json", steps=2)
    with pytest.raises(ValueError, match="must be positive"):
        timeline_png(trace, tmp_path / "x.png", window_s=0)
    assert plot_cli("--timeline", str(tmp_path / "dict.json")) == 2
    assert capsys.readouterr().err.startswith(
        f"synthgrad plot: {tmp_path / 'dict.json'}: not a Chrome trace"
    )
    assert plot_cli("--timeline", str(tmp_path / "missing.json")) == 2
    assert "no such trace file" in capsys.readouterr().err
    assert plot_cli("--timeline", str(trace), str(tmp_path)) == 2
    assert "not both" in capsys.readouterr().err
