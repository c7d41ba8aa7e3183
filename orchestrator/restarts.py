"""What the supervisor knows of each agent, and the restart policy it applies to faults.

An agent's record (`AgentRecord`) holds its current process, lifecycle state, when it was
last heard, its last metrics, and its fault history: restarts, downtime, and the counters
(rejects, drops, non-finite values) of its earlier incarnations, so summary.json's totals
span the whole run.  `RestartPolicy` decides whether a fault is survivable and when the
restart happens: `run.max_restarts` per agent, the n-th after `run.restart_backoff_s *
2**(n-1)` seconds.  The source is never restarted inside a run (its position is the run's
clock); a source fault ends the run, which `synthgrad run --resume` continues.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..protocol.lifecycle import Lifecycle
from ..protocol.plan import RunSettings
from .launcher import AgentHandle
from .reports import COUNTERS, counters


class RunFailed(RuntimeError):
    """An agent failed or vanished; the message names it and carries its traceback."""


@dataclass
class AgentRecord:
    """What the supervisor knows of one agent.

    Attributes:
        incarnation: 0 for the first process, n after the n-th restart.
        last_heard: `time.monotonic()` of its last control message.
        down_since: when its current fault was detected; None while it is up.
        restart_at: when its next process starts (None: not scheduled).
        carried: counters of its dead incarnations, by COUNTERS prefix.
        latest: the newest value of every key its training reports carried (status.json
            shows an SG cosine that was not in the very last report).
        ready_ns: `time.monotonic_ns()` when its ready heartbeat arrived (the clock-offset
            round trip that START closes).
    """

    handle: AgentHandle
    pid: int | None = None
    steps: int = 0
    state: Lifecycle = Lifecycle.SPAWNED
    last_metrics: dict = field(default_factory=dict)
    incarnation: int = 0
    restarts: int = 0
    downtime_s: float = 0.0
    last_heard: float = field(default_factory=time.monotonic)
    down_since: float | None = None
    restart_at: float | None = None
    late_warned: bool = False
    carried: dict[str, dict[str, int]] = field(default_factory=dict)
    host: str | None = None
    latest: dict = field(default_factory=dict)
    ready_ns: int = 0

    def advance(self, state: Lifecycle) -> None:
        self.state = self.state.advance(state)

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def heard(self) -> None:
        self.last_heard = time.monotonic()
        self.late_warned = False

    def counters(self, prefix: str) -> dict[str, int]:
        """This agent's counters under `prefix` over every incarnation."""
        total = dict(self.carried.get(prefix, {}))
        for key, n in counters(self.last_metrics, prefix).items():
            total[key] = total.get(key, 0) + n
        return total

    def went_down(self, now: float) -> None:
        """A fault was detected: keep the dead incarnation's counters, mark it down."""
        for prefix in COUNTERS:
            self.carried[prefix] = self.counters(prefix)
        self.last_metrics = {}
        if self.down_since is None:  # a restart that failed again extends the same outage
            self.down_since = now
        self.state = Lifecycle.FAILED

    def relaunched(self, handle: AgentHandle) -> None:
        self.handle, self.pid, self.restart_at = handle, handle.pid, None
        self.state = Lifecycle.SPAWNED
        self.heard()

    def rejoined(self, now: float) -> float:
        """Its new process runs again; the outage's length in seconds."""
        outage = now - self.down_since
        self.downtime_s += outage
        self.down_since = None
        self.incarnation += 1
        return outage

    def summary(self) -> dict:
        """summary.json's entry for this agent; the counters as of its last metrics report."""
        return {
            "pid": self.pid, "host": self.host, "steps": self.steps, "state": self.state.value, "restarts": self.restarts,
            "downtime_s": round(self.downtime_s, 3),
            **{prefix[:-1]: self.counters(prefix) for prefix in COUNTERS},
        }


class RestartPolicy:
    """`run.max_restarts` and `run.restart_backoff_s` applied to one fault."""

    def __init__(self, run: RunSettings, source: str, unlocked: bool = False) -> None:
        """`unlocked`: the run has `unlocked` links (complete unlock), whose agents are not
        restarted: its schedule runs every step in order, and a restart leaves holes."""
        self.run, self.source, self.unlocked = run, source, unlocked

    def refusal(self, name: str, record: AgentRecord) -> str | None:
        """Why this fault ends the run, or None when the agent is restarted."""
        if name == self.source:
            return "the source is not restarted inside a run (continue it with synthgrad run --resume RUN_DIR)"
        if self.unlocked:
            return "agents of a run with 'unlocked' links are not restarted inside it (continue it with synthgrad run --resume RUN_DIR)"
        if record.restarts >= self.run.max_restarts:
            return f"restarts exhausted ({record.restarts} of run.max_restarts = {self.run.max_restarts})"
        return None

    def delay_s(self, record: AgentRecord) -> float:
        """Seconds before the next restart: backoff doubling with each one already made."""
        return self.run.restart_backoff_s * 2 ** record.restarts
