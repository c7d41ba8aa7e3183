"""Watching a run (docs/watching.md): status.json, `synthgrad status` and `stop`, the merged
trace, plots and TensorBoard scalars, on real runs of real agent processes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
from synthgrad.orchestrator.status import AGENT_FIELDS

from ..conftest import EXAMPLES, last_json, run_cli
from .test_lifecycle import _wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SPAN_KINDS = {"wait", "forward", "sg_predict", "backward", "optimizer", "sg_regression", "send", "produce"}
AGENTS = ["source", "l1", "l2", "l3", "head"]  # examples/mnist_dni.toml, in plan order


@pytest.fixture(scope="module")
def traced(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """One short DNI run with --trace and --tensorboard; its run dir and summary."""
    where = tmp_path_factory.mktemp("traced")
    proc = run_cli(
        ["run", str(EXAMPLES / "mnist_dni.toml"), "--set", "run.steps=80", "--set", "run.eval_every=40",
         "--trace", "--tensorboard", "--json"],
        cwd=where, timeout=240, plots=True,
    )
    assert proc.returncode == 0, proc.stderr
    summary = last_json(proc.stdout)
    return Path(summary["run_dir"]), summary, proc


def test_the_trace_has_a_track_per_agent_and_spans_of_every_kind_on_the_run_s_clock(traced):
    run_dir, summary, proc = traced
    assert "trace.json" in proc.stderr  # the CLI says where it is
    doc = json.loads((run_dir / "trace.json").read_text())
    events = doc["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert [names[i] for i in sorted(names)] == AGENTS
    spans = [e for e in events if e["ph"] == "X"]
    assert SPAN_KINDS <= {e["cat"] for e in spans}
    by_agent = {names[e["tid"]]: set() for e in spans}
    for e in spans:
        by_agent[names[e["tid"]]].add(e["cat"])
    assert {"sg_predict", "sg_regression", "forward", "backward", "optimizer"} <= by_agent["l1"]  # a DNI sender
    assert "produce" in by_agent["source"] and "sg_predict" not in by_agent["head"]
    # One origin: the command's start, as summary.json's timings.  Every span lies between
    # START and the moment every agent had exited (a few ms of clock-offset error allowed).
    timings = summary["timings"]
    slack_us = 5_000
    assert min(e["ts"] for e in spans) >= timings["start_s"] * 1e6 - slack_us
    assert max(e["ts"] + e["dur"] for e in spans) <= timings["stopped_s"] * 1e6 + slack_us
    # Flow arrows: every "s" has its "f", from one agent's track to another's.
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts.keys() == ends.keys() and len(starts) >= 80 * 4  # at least every training activation
    assert all(starts[i]["tid"] != ends[i]["tid"] for i in starts)
    # Clock offsets within NTP's bound (half the round trip): the stamps were taken in order.
    for agent, clock in doc["otherData"]["clocks"].items():
        assert abs(clock["offset_us"]) <= clock["round_trip_us"] / 2 + 1, agent
    assert doc["otherData"]["mode"] == "dni"


def test_status_after_the_end_lists_every_agent_with_every_field(traced, tmp_path):
    run_dir, summary, _ = traced
    proc = run_cli(["status", str(run_dir), "--json"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["state"] == "finished" and doc["exit_code"] == 0 and doc["orchestrator_alive"] is False
    assert doc["steps"] == summary["steps"] == 80
    assert doc["summary"] == str(run_dir / "summary.json")
    assert list(doc["agents"]) == AGENTS
    for name, row in doc["agents"].items():
        assert set(AGENT_FIELDS) <= set(row), name
        assert row["state"] == "stopped" and row["steps"] == 80 and row["steps_per_s"] > 0, name
    for link in ("l1->l2", "l2->l3", "l3->head"):  # the three DNI interfaces, scored
        assert -1 <= doc["links"][link]["cosine"] <= 1 and doc["links"][link]["norm_ratio"] > 0
    table = run_cli(["status", str(run_dir)], cwd=tmp_path, timeout=60)
    assert table.returncode == 0 and all(name in table.stdout for name in AGENTS) and "finished" in table.stdout


def test_sg_quality_goes_into_metrics_and_tensorboard_with_cleanrl_names(traced):
    run_dir, _, _ = traced
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    l1 = [line for line in lines if line["agent"] == "l1" and "sg_cosine.l1->l2" in line]
    assert l1 and all(-1 <= line["sg_cosine.l1->l2"] <= 1 and line["sg_staleness.l1->l2"] >= 0 for line in l1)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"charts/test_accuracy", "losses/test_loss", "losses/task_loss", "charts/SPS", "sg/l1_to_l2/cosine"} <= tags
    assert events.Scalars("charts/test_accuracy")[-1].step == 80


def test_every_run_draws_its_plots(traced):
    run_dir, _, _ = traced
    for name in ("accuracy_loss.png", "sg_quality.png", "throughput.png"):
        image = matplotlib.image.imread(run_dir / "plots" / name)
        assert image.shape[0] > 200 and image.std() > 0.05, name  # decoded, and not one flat colour


def _status(run_dir: Path, cwd: Path) -> dict:
    proc = run_cli(["status", str(run_dir), "--json"], cwd=cwd, timeout=60)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def _state(runs: Path, cwd: Path) -> str | None:
    """The state status.json gives for the one run under `runs`, None before there is one."""
    found = list(runs.glob("*/status.json"))
    return _status(found[0].parent, cwd).get("state") if found else None


def test_stop_ends_a_live_run_cleanly_and_status_shows_it_live(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthgrad.orchestrator.cli", "run", str(EXAMPLES / "mnist_dni.toml"),
         "--set", "run.steps=100000", "--runs-dir", str(runs), "--quiet", "--no-plots"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert _wait_for(lambda: any(runs.glob("*/status.json")), 120), "no status.json appeared"
        run_dir = next(runs.glob("*"))
        live = lambda: (doc := _status(run_dir, tmp_path)).get("state") == "training" and all(  # noqa: E731
            (row.get("steps") or 0) > 0 and row.get("steps_per_s") for row in doc["agents"].values()
        )
        assert _wait_for(live, 120), f"never saw every agent training: {_status(run_dir, tmp_path)}"
        doc = _status(run_dir, tmp_path)
        assert doc["orchestrator_alive"] is True and doc["exit_code"] is None and doc["eta_s"] > 0
        for name, row in doc["agents"].items():
            assert set(AGENT_FIELDS) <= set(row) and row["state"] == "running" and row["pid"] > 0, name
        # Default RUN_DIR: the newest run under ./runs.
        stop = run_cli(["stop", "--timeout", "90"], cwd=tmp_path, timeout=120)
        assert stop.returncode == 0, stop.stderr
        assert "summary" in stop.stdout
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert code == 128 + signal.SIGINT  # the Ctrl-C path, as documented
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] == "SIGINT" and 0 < summary["steps"] < 100000
    for name in AGENTS:
        assert (run_dir / "agents" / name / "final.pt").is_file(), name
    doc = _status(run_dir, tmp_path)
    assert doc["state"] == "interrupted" and doc["exit_code"] == 130
    again = run_cli(["stop", str(run_dir)], cwd=tmp_path, timeout=60)
    assert again.returncode == 1 and "not running" in again.stderr


def test_status_and_stop_name_a_directory_that_is_not_a_run(tmp_path):
    for verb in ("status", "stop"):
        proc = run_cli([verb, str(tmp_path)], cwd=tmp_path, timeout=60)
        assert proc.returncode == 2 and "no status.json" in proc.stderr, proc.stderr
    proc = run_cli(["status"], cwd=tmp_path, timeout=60)  # no runs/ at all
    assert proc.returncode == 2 and "give RUN_DIR" in proc.stderr


def test_a_lost_orchestrator_is_reported_as_lost(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "synthgrad.orchestrator.cli", "run", str(EXAMPLES / "mnist_dni.toml"),
         "--set", "run.steps=100000", "--runs-dir", str(runs), "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert _wait_for(lambda: _state(runs, tmp_path) == "training", 120)
        proc.kill()  # SIGKILL: no summary, no last status; the agents follow it (parent watch)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    doc = _status(next(runs.glob("*")), tmp_path)
    assert doc["state"] == "lost" and doc["orchestrator_alive"] is False
