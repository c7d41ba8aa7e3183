"""`RUN_DIR/trace.json`: every agent's spans merged into one Chrome/Perfetto trace.

Under `synthgrad run --trace` each agent process writes `RUN_DIR/trace/NAME.PID.json`
(agents/runtime/trace.py): spans and message ends on its own `time.monotonic_ns()` clock,
with that clock's offset to the orchestrator's, estimated from the HELLO/WELCOME round trip.
`merge_trace` puts them on the orchestrator's clock, with 0 at the command's start (the
origin of summary.json's timings), and writes the format `synthgrad simulate --trace` writes
(orchestrator/fabric/report.py), so a real and a simulated run of one topology open side by
side in https://ui.perfetto.dev:

    pid 0 "agents", one track (tid) per agent in plan order, named by a thread_name event;
    complete events ("ph": "X", ts and dur in microseconds) named by their kind (one of
    agents/runtime/trace.py's; also their `cat`), with the step in args.step;
    a flow arrow per delivered data message, named by the message's kind: "ph": "s" at the
    start of the sender's `send` span that handed it to ZeroMQ (the first after the step
    queued it), "f" at the receiver's read, bound to the next span there (the one that used
    it).  Agents on the orchestrator's host share its monotonic clock and are not shifted;
    an agent on another host is shifted by its estimated offset.

A restarted agent wrote one file per incarnation: all go on its track.  An agent that died
wrote none: its track holds what its later incarnations did.
"""

from __future__ import annotations

import json
import socket
from bisect import bisect_left
from collections import defaultdict, deque
from pathlib import Path

from .rundir import replace_text

TRACE_FILE = "trace.json"


def set_aside(run_dir: Path) -> list[Path]:
    """Before `--resume` starts agents in `run_dir`: rename an earlier session's trace/ and
    trace.json to trace.N/ and trace.N.json (N = 1, 2, ...), so that the new trace holds only
    the new session (its clock starts at its own command).  Returns the new names."""
    run_dir = Path(run_dir)
    n = 1
    while (run_dir / f"trace.{n}").exists() or (run_dir / f"trace.{n}.json").exists():
        n += 1
    moved = []
    for old, new in (("trace", f"trace.{n}"), (TRACE_FILE, f"trace.{n}.json")):
        if (run_dir / old).exists():
            (run_dir / old).rename(run_dir / new)
            moved.append(run_dir / new)
    return moved


def _load(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.json")):
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):  # torn by a kill: that incarnation's events are lost
            continue
    return docs


def _inside_send(spans: list[tuple[float, float]], queued: float) -> float:
    """Just inside the start of the first `send` span ending after `queued` (the flush that
    sent the message: a flow's start binds to its enclosing span, and the message left no
    earlier than that flush began), else `queued` itself."""
    i = bisect_left(spans, (queued, queued))
    if i > 0 and spans[i - 1][1] >= queued:
        i -= 1  # a send under way when the message was queued
    if i < len(spans):
        start, end = spans[i]
        return start + min(0.001, (end - start) / 2)  # 1 ns in: inside, at its start
    return queued


def merge_trace(run_dir: Path, order: list[str], origin_ns: int, meta: dict | None = None) -> Path | None:
    """Merge RUN_DIR/trace/*.json into RUN_DIR/trace.json; None when no agent wrote a trace.

    Args:
        order: the agents in plan order (their track order).
        origin_ns: the orchestrator's `time.monotonic_ns()` at the command's start (ts 0).
        meta: recorded under `otherData` (e.g. the run's mode).
    """
    run_dir = Path(run_dir)
    docs = _load(run_dir / "trace")
    if not docs:
        return None
    tid = {name: i for i, name in enumerate(order)}
    here = socket.gethostname()
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "agents"}}]
    for name, i in tid.items():
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": i, "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": i, "args": {"sort_index": i}})
    sends: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
    reads: list[tuple[str, float, int]] = []
    clocks, dropped = {}, {}
    send_spans: dict[int, list[tuple[float, float]]] = defaultdict(list)  # (start, end) in us, per track
    for doc in docs:
        agent = doc["agent"]
        track = tid.get(agent)
        if track is None:
            continue
        # One host has one monotonic clock: the round trip's estimate (off by tens of ms under
        # load) is for agents elsewhere; it is kept in otherData either way.
        same_host = doc.get("host") in (None, here)
        shift = (0 if same_host else int(doc.get("clock_offset_ns", 0))) - origin_ns
        clocks[f"{agent}.{doc.get('pid')}"] = {"offset_us": doc.get("clock_offset_ns", 0) / 1e3, "round_trip_us": doc.get("round_trip_ns", 0) / 1e3,
                                               "applied": not same_host}
        dropped[agent] = dropped.get(agent, 0) + int(doc.get("dropped", 0))
        for kind, start, end, step in doc["spans"]:
            event = {"name": kind, "cat": kind, "ph": "X", "ts": (start + shift) / 1e3,
                     "dur": (end - start) / 1e3, "pid": 0, "tid": track}
            if step >= 0:
                event["args"] = {"step": step}
            events.append(event)
            if kind == "send":
                send_spans[track].append((event["ts"], event["ts"] + event["dur"]))
        for key, t, out in doc["flows"]:
            if out:
                sends[key].append(((t + shift) / 1e3, track))
            else:
                reads.append((key, (t + shift) / 1e3, track))
    for spans in send_spans.values():
        spans.sort()
    flows = 0
    for key, t, track in sorted(reads, key=lambda r: r[1]):
        queue = sends.get(key)
        if not queue:  # its sender's incarnation wrote no trace (it died), or the limit cut it
            continue
        t_sent, src = queue.popleft()  # a message sent again after a restart pairs in order
        t_sent = _inside_send(send_spans[src], t_sent)
        kind = key.split("|")[1]
        flows += 1
        events.append({"name": kind, "cat": "message", "ph": "s", "id": flows, "ts": t_sent, "pid": 0, "tid": src})
        events.append({"name": kind, "cat": "message", "ph": "f", "id": flows, "ts": t, "pid": 0, "tid": track})
    doc = {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"source": "synthgrad run --trace", "clocks": clocks, "dropped_events": dropped, "messages": flows, **(meta or {})},
    }
    return replace_text(run_dir / TRACE_FILE, json.dumps(doc))
