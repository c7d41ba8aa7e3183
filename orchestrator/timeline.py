"""A Gantt chart (PNG) of a Chrome/Perfetto trace: a run's spans, or the fabric simulator's.

Input: `{"traceEvents": [...]}` (or the bare list of events), as written by the agents' tracing
and by `synthgrad simulate --trace` (orchestrator/fabric/report.py). What is read:

    ph "X"   a complete span: `ts` and `dur` in microseconds, `pid`, `tid`, `name`; its kind
             is `name` up to the first space ("forward 12" -> forward, the simulator's
             "F 3" -> F)
    ph "M"   `thread_name` / `process_name` metadata: the names of the tracks (pid, tid)
    ph "s", "t", "f"   flow steps with a common `cat` and `id` (as Chrome matches them):
             drawn as thin lines from each step to the next (a message from its sender's
             track to its receiver's)

Anything else (counters, instant events, B/E pairs) is ignored. There is one row per track,
in (pid, tid) order, labelled by its thread name; spans that overlap on a track (nested spans,
or messages in flight together on a simulated link) are drawn in lanes within the row, each
in the lowest lane free at its start. Bars are coloured by kind, with a legend of kinds.

The time window: by default the whole trace when it lasts at most `DEFAULT_WINDOW_S` (50 ms,
so a simulated trace of a few steps is shown whole), else the 50 ms in its middle, where a
real run is past its start-up and single steps are still wide enough to see. `window_s`
sets the length (`math.inf`: the whole trace) and `start_s` where it begins (seconds after
the first span; default: centred).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DEFAULT_WINDOW_S = 0.05
MAX_LANES = 6  # spans overlapping deeper than this share the last lane
# Kinds of the agents' traces and the simulator's ("F" forward, "B" backward, "G" SG
# training, "act"/"grad" messages), paired by meaning so the two traces read alike.
KIND_COLOURS = {
    **{"forward": "C0", "F": "C0", "backward": "C1", "B": "C1"},
    **{"sg_predict": "C2", "optimizer": "C3", "sg_regression": "C4", "G": "C4", "G+F": "C9"},
    **{"send": "C5", "act": "C5", "grad": "C6", "wait": "C7", "produce": "C8", "evaluate": "C9"},
    "si_regression": "#c5b0d5",
}
_SPARE = "#aec7e8 #ffbb78 #98df8a #ff9896 #c49c94 #f7b6d2 #dbdb8d #9edae5".split()

Track = tuple[Any, Any]  # (pid, tid)
_WHICH = (
    "give a trace file such as `synthgrad simulate FILE --fabric PRESET --trace OUT.json` writes"
)


@dataclass
class Trace:
    """The drawable content of a trace file; times in microseconds as in the file."""

    # (track, ts, dur, kind)
    spans: list[tuple[Track, float, float, str]] = field(default_factory=list)
    names: dict[Track, str] = field(default_factory=dict)  # thread names
    processes: dict[Any, str] = field(default_factory=dict)
    flows: list[tuple[float, Track, float, Track]] = field(default_factory=list)  # from, to
    other: dict = field(default_factory=dict)  # the file's otherData (the simulator's mode...)

    @property
    def tracks(self) -> list[Track]:
        """Every named or used track, in (pid, tid) order (numbers before names)."""
        seen = set(self.names) | {s[0] for s in self.spans}
        return sorted(
            seen,
            key=lambda tr: tuple(
                (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v)) for v in tr
            ),
        )


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def load_trace(path: str | Path) -> Trace:
    """Read a trace file. ValueError (naming the file) for one that is not a Chrome trace or
    holds no complete span; OSError when it cannot be read."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a trace: not JSON ({err}); {_WHICH}") from None
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise ValueError(
            f'{path}: not a Chrome trace: expected {{"traceEvents": [...]}} or a list of events; {_WHICH}'
        )
    other = doc.get("otherData") if isinstance(doc, dict) else None
    trace = Trace(other=other if isinstance(other, dict) else {})
    flow_steps: dict[tuple[str, str], list[tuple[float, str, Track]]] = defaultdict(list)
    for ev in events:
        if not isinstance(ev, dict):
            continue
        ph, track = ev.get("ph"), (ev.get("pid", 0), ev.get("tid", 0))
        if ph == "X":
            ts, dur = _num(ev.get("ts")), _num(ev.get("dur", 0))
            if ts is not None and dur is not None and dur >= 0:
                trace.spans.append(
                    (track, ts, dur, str(ev.get("name", "?")).split(" ", 1)[0] or "?")
                )
        elif ph == "M":
            name = (ev.get("args") or {}).get("name") if isinstance(ev.get("args"), dict) else None
            if name is None:
                continue
            if ev.get("name") == "thread_name":
                trace.names[track] = str(name)
            elif ev.get("name") == "process_name":
                trace.processes[ev.get("pid", 0)] = str(name)
        elif ph in ("s", "t", "f") and _num(ev.get("ts")) is not None and "id" in ev:
            flow_steps[(str(ev.get("cat", "")), str(ev["id"]))].append((float(ev["ts"]), ph, track))
    if not trace.spans:
        raise ValueError(f'{path}: the trace holds no complete span ("ph": "X") to draw')
    for steps in flow_steps.values():
        trace.flows.extend(_chain(steps))
    return trace


def _chain(steps: list[tuple[float, str, Track]]) -> list[tuple[float, Track, float, Track]]:
    """The segments of one flow id's steps: s -> t ... -> f.

    One start and one finish (the usual case) are joined whatever their times say: the two
    ends are written by different processes, whose clocks may disagree by a little. An id
    used for several flows is split in time order, each start opening a flow.
    """
    order = {"s": 0, "t": 1, "f": 2}
    if sum(ph == "s" for _, ph, _ in steps) == 1 and sum(ph == "f" for _, ph, _ in steps) == 1:
        steps = sorted(steps, key=lambda st: (order[st[1]], st[0]))
    else:
        steps = sorted(steps, key=lambda st: st[0])
    segments, last = [], None
    for ts, ph, track in steps:
        if ph != "s" and last is not None:
            segments.append((*last, ts, track))
        last = None if ph == "f" else (ts, track)
    return segments


def _window(
    trace: Trace, window_s: float | None, start_s: float | None
) -> tuple[float, float, float]:
    """(first span's start, window start, window end) in microseconds."""
    t0 = min(s[1] for s in trace.spans)
    t1 = max(s[1] + s[2] for s in trace.spans)
    length = (DEFAULT_WINDOW_S if window_s is None else window_s) * 1e6
    if not length > 0:
        raise ValueError(f"the time window must be positive (got {window_s * 1e3:g} ms)")
    if start_s is None:
        start = t0 + max(0.0, (t1 - t0 - length) / 2) if length < t1 - t0 else t0
    else:
        start = t0 + start_s * 1e6
        if not t0 <= start < t1:
            raise ValueError(
                f"the window's start ({start_s * 1e3:g} ms) is outside the trace (0 to {(t1 - t0) / 1e3:.6g} ms)"
            )
    end = min(t1, start + length)
    return t0, start, max(end, start + 1.0)  # a trace of zero-length spans: a 1 µs window


def _lanes(spans: list[tuple[float, float, str]]) -> tuple[list[int], int]:
    """Each span's lane within its row (the lowest one free at its start) and the lanes used."""
    ends: list[float] = []
    lanes = []
    for ts, dur, _ in spans:
        lane = next((i for i, end in enumerate(ends) if end <= ts), None)
        if lane is None:
            if len(ends) < MAX_LANES:
                ends.append(0.0)
            lane = len(ends) - 1
        ends[lane] = max(ends[lane], ts + dur)
        lanes.append(lane)
    return lanes, max(1, len(ends))


def timeline_figure(
    trace_json_path: str | Path, *, window_s: float | None = None, start_s: float | None = None
) -> Figure:
    """The Gantt chart of a trace file as a Figure (see the module docstring for the window).
    Its one Axes has a y tick per track, labelled by the thread name."""
    path = Path(trace_json_path)
    trace = load_trace(path)
    t0, start, end = _window(trace, window_s, start_s)
    scale, unit = (1e3, "ms") if end - start >= 2e3 else (1.0, "µs")
    tracks = trace.tracks
    row = {tr: i for i, tr in enumerate(tracks)}
    by_track: dict[Track, list[tuple[float, float, str]]] = defaultdict(list)
    for track, ts, dur, kind in trace.spans:
        if ts < end and ts + dur >= start:
            by_track[track].append((ts, dur, kind))
    min_w = (end - start) / 1500  # a zero-length span still shows as a tick
    bars: dict[str, list] = defaultdict(list)
    kinds_seen: dict[str, None] = {}
    for track, spans in by_track.items():
        spans.sort(key=lambda s: (s[0], -s[1]))
        lanes, n = _lanes(spans)
        h = 0.8 / n
        for (ts, dur, kind), lane in zip(spans, lanes, strict=True):
            x0, x1 = (max(ts, start) - t0) / scale, (min(ts + dur, end) - t0) / scale
            x1 = max(x1, x0 + min_w / scale)
            y0 = row[track] - 0.4 + lane * h
            bars[kind].append([(x0, y0), (x1, y0), (x1, y0 + h * 0.9), (x0, y0 + h * 0.9)])
            kinds_seen[kind] = None
    known = list(KIND_COLOURS)
    kinds = sorted(kinds_seen, key=lambda k: known.index(k) if k in KIND_COLOURS else len(known))
    colours = _colours(kinds)
    # 0.4 inch a row, and room for the legend of kinds beside the rows.
    height = max(1.6 + 0.4 * len(tracks), 1.2 + 0.2 * (len(kinds) + bool(trace.flows)))
    fig = Figure(figsize=(14, min(40.0, height)))
    ax = fig.add_subplot()
    for kind, verts in bars.items():
        ax.add_collection(PolyCollection(verts, facecolors=colours[kind], edgecolors="none"))
    flows = [
        [((a - t0) / scale, row[ta]), ((b - t0) / scale, row[tb])]
        for a, ta, b, tb in trace.flows
        if start <= a <= end or start <= b <= end  # one end in view: no lines from afar
    ]
    if flows:
        ax.add_collection(LineCollection(flows, colors="0.2", linewidths=0.7, alpha=0.7, zorder=3))
    ax.set_xlim((start - t0) / scale, (end - t0) / scale)
    ax.set_ylim(len(tracks) - 0.5, -0.5)
    ax.set_yticks(
        range(len(tracks)),
        [trace.names.get(tr, f"pid {tr[0]} tid {tr[1]}") for tr in tracks],
        fontsize=8,
    )
    for i in range(1, len(tracks)):  # process boundaries, named at the group's first row
        if tracks[i][0] != tracks[i - 1][0]:
            ax.axhline(i - 0.5, color="0.5", lw=0.8)
    for i, tr in enumerate(tracks):
        if tr[0] in trace.processes and (i == 0 or tracks[i - 1][0] != tr[0]):
            ax.text(
                1.005,
                i - 0.45,
                trace.processes[tr[0]],
                transform=ax.get_yaxis_transform(),
                ha="left",
                va="top",
                fontsize=8,
                color="0.4",
                style="italic",
            )
    ax.set_xlabel(f"time since the trace began ({unit})")
    ax.grid(axis="x", alpha=0.3)
    if not bars:
        ax.text(
            0.5, 0.5, "no spans in this window", transform=ax.transAxes, ha="center", color="0.45"
        )
    handles = [Patch(color=colours[k], label=k) for k in kinds]
    if flows:
        handles.append(Patch(color="0.3", label="flow (message)"))
    if handles:
        ax.legend(
            handles=handles,
            fontsize=8,
            loc="lower left",
            bbox_to_anchor=(1.005, 0.0),
            title="span kind",
        )
    ax.set_title(
        f"{path.name}{_about(trace.other)}: {_t(start - t0, scale)}-{_t(end - t0, scale)} {unit} "
        f"of {_t(max(s[1] + s[2] for s in trace.spans) - t0, scale)} {unit}"
    )
    fig.subplots_adjust(
        left=0.14, right=0.86, bottom=0.8 / fig.get_figheight(), top=1 - 0.5 / fig.get_figheight()
    )
    return fig


def _about(other: dict) -> str:
    """What the file's otherData says of it: " (RUN_ID, mode M, WRITER)", or ""."""
    parts = [str(other["run_id"])] if "run_id" in other else []
    if "mode" in other:
        parts.append(f"mode {other['mode']}")
    if "source" in other:
        parts.append(str(other["source"]))
    elif "microbatches" in other:  # fabric/report.py's write_trace
        parts.append("simulated")
    dropped = other.get("dropped_events")
    if isinstance(dropped, dict) and sum(v for v in dropped.values() if isinstance(v, int)):
        parts.append(f"{sum(v for v in dropped.values() if isinstance(v, int))} events not kept")
    return f" ({', '.join(parts)})" if parts else ""


def _t(us: float, scale: float) -> str:
    """A time for the title: whole units from 100 up (no 1e+04), else 3 significant digits."""
    x = us / scale
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _colours(kinds: list[str]) -> dict[str, str]:
    """Known kinds keep their colour; the others take spare ones in order of appearance."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    used = {to_hex(c) for c in KIND_COLOURS.values()}
    palette = [c for c in _SPARE + [to_hex(c) for c in colormaps["tab20b"].colors] if c not in used]
    spare = iter(palette * (1 + len(kinds) // len(palette)))
    return {k: KIND_COLOURS.get(k) or next(spare) for k in kinds}


def timeline_png(
    trace_json_path: str | Path,
    out: str | Path,
    *,
    window_s: float | None = None,
    start_s: float | None = None,
) -> Path:
    """Write the Gantt chart of a trace file to `out` (PNG) and return its path.

    ValueError for a file that is not a trace or a window that is not positive."""
    fig = timeline_figure(trace_json_path, window_s=window_s, start_s=start_s)
    out = Path(out)
    fig.savefig(out, dpi=100, format="png")
    return out
