"""What one agent did when, for `synthgrad run --trace`: spans and message ends on its own clock.

Each agent process records, on `time.monotonic_ns()`:

    spans   (kind, start, end, step): `wait` (nothing to do: the loop blocked on its
            sockets; waits under WAIT_MIN_NS are not kept), `forward` (the module), `loss`
            (a terminal's task loss), `sg_predict`, `backward`, `optimizer`, `sg_regression`,
            `si_regression` (a synthetic-input model's fit, mode `unlocked`), `evaluate`,
            `produce` (a source's batch) and `send` (handing messages to ZeroMQ);
    flows   one end of each data message: the sender's at the moment it queues it, the
            receiver's when it reads it, both under the same key (src, dst, kind, port,
            step), so the orchestrator can draw an arrow from one to the other.

At the end of the run the agent writes them with its clock offset to the orchestrator's
(estimated from the round trip of its ready heartbeat and the START that answers it,
`clock_offset`) to
`RUN_DIR/trace/NAME.PID.json`; orchestrator/trace.py merges every agent's file into one
Chrome/Perfetto trace.

Off (the default) an agent holds `NULL_TRACER`, whose `span` returns one shared no-op
context manager: a method call per span, about 0.3 us, some 30 times per step (all agents
together).  On, each event is a few integers appended to an array; an agent keeps its
first `limit` events (and counts the rest), so a long run cannot exhaust memory.
"""

from __future__ import annotations

import json
import os
import socket
import time
from array import array
from contextlib import nullcontext
from pathlib import Path

from .checkpoint import write_atomic

WAIT_MIN_NS = 50_000  # shorter blocking is loop overhead, not waiting; kept out of the trace
LIMIT = 200_000  # events kept per agent (spans and flow ends together)

_NOOP = nullcontext()


def clock_offset(sent_ns: int, received_ns: int, peer_received_ns: int, peer_sent_ns: int) -> tuple[int, int]:
    """(offset, round trip) in ns of a peer's clock against ours, from one round trip (NTP).

    We sent at `sent_ns` (our clock), the peer received at `peer_received_ns` and answered at
    `peer_sent_ns` (its clock), we received at `received_ns`.  ``our time + offset`` is the
    peer's time; the error is at most half the round trip, however long the peer took to
    answer (RFC 5905, section 8).
    """
    offset = ((peer_received_ns - sent_ns) + (peer_sent_ns - received_ns)) // 2
    return offset, (received_ns - sent_ns) - (peer_sent_ns - peer_received_ns)


def flow_key(src: str, dst: str, kind: str, port: str, step: int) -> str:
    """The key both ends of one data message record."""
    return f"{src}>{dst}|{kind}|{port}|{step}"


class NullTracer:
    """Tracing off: every call does nothing."""

    enabled = False

    def span(self, kind: str, step: int = -1):
        return _NOOP

    def add(self, kind: str, start_ns: int, end_ns: int, step: int = -1) -> None:
        pass

    def flow(self, key: str, out: bool) -> None:
        pass


NULL_TRACER = NullTracer()


class _Span:
    __slots__ = ("tracer", "kind", "step", "start")

    def __init__(self, tracer: Tracer, kind: str, step: int) -> None:
        self.tracer, self.kind, self.step = tracer, kind, step

    def __enter__(self) -> _Span:
        self.start = time.monotonic_ns()
        return self

    def __exit__(self, *_exc) -> None:
        self.tracer.add(self.kind, self.start, time.monotonic_ns(), self.step)


class Tracer:
    """Tracing on: spans and flow ends in memory until `write` (see the module docstring).

    Events live in flat `array('q')`s, four (or two) integers each, not in tuples: a list of
    tens of thousands of tuples is what the cyclic garbage collector would scan again and
    again while the agent trains.
    """

    enabled = True

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.kinds: dict[str, int] = {}  # span kind -> its index in the written file's "kinds"
        self.spans = array("q")  # kind index, start, end, step; per span
        self.flow_keys: list[str] = []
        self.flow_times = array("q")  # time, 1 for the sender's end or 0; per flow end
        self.dropped = 0

    def _full(self) -> bool:
        if len(self.spans) // 4 + len(self.flow_keys) >= self.limit:
            self.dropped += 1
            return True
        return False

    def span(self, kind: str, step: int = -1) -> _Span:
        """A context manager recording `kind` over the `with` block."""
        return _Span(self, kind, step)

    def add(self, kind: str, start_ns: int, end_ns: int, step: int = -1) -> None:
        if not self._full():
            index = self.kinds.setdefault(kind, len(self.kinds))
            self.spans.extend((index, start_ns, end_ns, step))

    def flow(self, key: str, out: bool) -> None:
        """One end of a data message now: the sender's (`out`) or the receiver's."""
        if not self._full():
            self.flow_keys.append(key)
            self.flow_times.extend((time.monotonic_ns(), int(out)))

    def write(self, folder: Path, agent: str, offset_ns: int, round_trip_ns: int) -> Path:
        """`folder/AGENT.PID.json`: the events, on this agent's clock, and its offset.

        `spans` are ``[kind, start_ns, end_ns, step]``, `flows` ``[key, time_ns, out]``."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{agent}.{os.getpid()}.json"
        names = list(self.kinds)
        s, f = self.spans, self.flow_times
        doc = {
            "agent": agent,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "clock_offset_ns": offset_ns,
            "round_trip_ns": round_trip_ns,
            "dropped": self.dropped,
            "spans": [[names[s[i]], s[i + 1], s[i + 2], s[i + 3]] for i in range(0, len(s), 4)],
            "flows": [[key, f[2 * i], bool(f[2 * i + 1])] for i, key in enumerate(self.flow_keys)],
        }
        write_atomic(path, json.dumps(doc).encode())
        return path
