"""status.json and trace files without a run: the readers' refusals and the merge's rules."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from synthgrad.orchestrator.status import StatusBoard, newest_run, read_status
from synthgrad.orchestrator.trace import merge_trace, set_aside

from ..conftest import run_cli


def _board(path, name: str, started_at: float, state: str = "training") -> None:
    path.mkdir(parents=True, exist_ok=True)
    StatusBoard(path, name, started_at).write(state, steps=1, agents={}, links={})


def test_the_newest_run_is_the_one_started_last_not_the_one_written_last(tmp_path):
    now = time.monotonic()
    _board(tmp_path / "b", "b", now - 5)  # started later
    _board(tmp_path / "a", "a", now - 50)
    (tmp_path / "a" / "status.json").touch()  # a live run rewrites its file every second
    os.utime(tmp_path / "a" / "status.json", (time.time() + 10, time.time() + 10))
    assert newest_run(tmp_path).name == "b"


@pytest.mark.parametrize(
    "doc",
    [
        {"state": "training", "agents": {}},  # no run_id
        {"state": "training", "run_id": "r", "agents": {"l1": "up"}},
        {"state": "training", "run_id": "r", "agents": {}, "elapsed_s": "zz"},
        {"state": "training", "run_id": "r", "agents": {}, "eta_s": float("nan")},
        {"state": "sleeping", "run_id": "r", "agents": {}},
        ["not", "a", "map"],
    ],
)
def test_a_status_file_that_is_not_one_is_refused_naming_the_file(tmp_path, doc):
    path = tmp_path / "status.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    with pytest.raises(ValueError, match="status.json: not a status file"):
        read_status(tmp_path)


def test_the_cli_refuses_a_bad_status_file_with_exit_2(tmp_path):
    (tmp_path / "status.json").write_bytes(b"\x00\xff binary")
    for verb in ("status", "stop"):
        proc = run_cli([verb, str(tmp_path)], cwd=tmp_path, timeout=60)
        assert proc.returncode == 2 and "not a status file" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(["status", str(tmp_path), "--watch", "--interval", "-1"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "must be a number of seconds > 0" in proc.stderr


def test_a_live_state_whose_orchestrator_is_gone_reads_lost(tmp_path):
    _board(tmp_path, "r", time.monotonic())
    doc = json.loads((tmp_path / "status.json").read_text())
    doc["orchestrator_pid"] = 1  # init: alive, but not a synthgrad process
    (tmp_path / "status.json").write_text(json.dumps(doc))
    assert read_status(tmp_path)["state"] == "lost"


def _agent_trace(folder, agent: str, pid: int, host: str, spans, flows, offset_ns: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    doc = {"agent": agent, "pid": pid, "host": host, "clock_offset_ns": offset_ns, "round_trip_ns": 2 * abs(offset_ns),
           "dropped": 0, "spans": spans, "flows": flows}
    (folder / f"{agent}.{pid}.json").write_text(json.dumps(doc))


def test_the_merge_shifts_only_agents_on_other_hosts_and_starts_flows_inside_their_send(tmp_path):
    here = socket.gethostname()
    key = "a>b|ACT|in|3"
    _agent_trace(tmp_path / "trace", "a", 1, here, [["forward", 1_000_000, 2_000_000, 3], ["send", 2_100_000, 2_500_000, -1]],
                 [[key, 2_050_000, True]], offset_ns=40_000_000)  # a wrong estimate: ignored on one host
    _agent_trace(tmp_path / "trace", "b", 2, "elsewhere", [["forward", 2_000_000, 3_000_000, 3]],
                 [[key, 1_900_000, False]], offset_ns=700_000)  # its clock is 0.7 ms behind ours
    doc = json.loads(merge_trace(tmp_path, ["a", "b"], origin_ns=0).read_text())
    spans = {(e["tid"], e["name"]): e for e in doc["traceEvents"] if e["ph"] == "X"}
    assert spans[(0, "forward")]["ts"] == 1000.0 and spans[(0, "forward")]["args"] == {"step": 3}
    assert spans[(1, "forward")]["ts"] == 2700.0
    (start,) = [e for e in doc["traceEvents"] if e["ph"] == "s"]
    (end,) = [e for e in doc["traceEvents"] if e["ph"] == "f"]
    assert 2100.0 <= start["ts"] < 2101.0 and end["ts"] == 2600.0 and start["id"] == end["id"]
    assert doc["otherData"]["clocks"]["a.1"]["applied"] is False and doc["otherData"]["clocks"]["b.2"]["applied"] is True


def test_resume_sets_an_earlier_session_s_trace_aside(tmp_path):
    (tmp_path / "trace").mkdir()
    (tmp_path / "trace.json").write_text("{}")
    assert set_aside(tmp_path) == [tmp_path / "trace.1", tmp_path / "trace.1.json"]
    (tmp_path / "trace").mkdir()
    assert set_aside(tmp_path) == [tmp_path / "trace.2"]
    assert set_aside(tmp_path) == [] and not (tmp_path / "trace").exists()


def test_plot_refuses_an_out_file_that_is_not_a_png(tmp_path):
    for out in ("x.pdf", "nodir/x.png"):
        proc = run_cli(["plot", str(tmp_path), "--out", out], cwd=tmp_path, timeout=60)
        assert proc.returncode == 2 and "--out" in proc.stderr, proc.stderr
