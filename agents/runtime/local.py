"""All agents of a topology in ONE process: the way the public DNI libraries run.

The same `AgentCore`s as the multi-process runtime, with in-memory queues in place of
sockets.  Benchmarks use it as the single-process baseline (identical arithmetic, no
messaging) and tests use it to check the step logic without processes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ...protocol.kinds import Kind
from ...protocol.message import Message
from .build import build_core
from .core import BACKWARD, CONTROL, AgentCore


class LocalRunner:
    """Runs agent cores to completion, delivering messages in order.

    Args:
        cores: the agents' cores by name (the source included).
        on_report: called with each control message as it is sent (e.g. to time evaluations).
    Attributes:
        reports: every control message the agents sent (metrics, evaluations), in order.
    """

    def __init__(
        self, cores: dict[str, AgentCore], on_report: Callable[[Message], None] | None = None
    ) -> None:
        self.cores = cores
        self.on_report = on_report
        self.source = next(c for c in cores.values() if c.is_source)
        self.forward: dict[str, deque[Message]] = {name: deque() for name in cores}
        self.backward: dict[str, deque[Message]] = {name: deque() for name in cores}
        self.reports: list[Message] = []

    def _route(self) -> None:
        for core in self.cores.values():
            for dest, plane, msg in core.outbox:
                if dest == CONTROL:
                    self.reports.append(msg)
                    if self.on_report is not None:
                        self.on_report(msg)
                else:
                    (self.backward if plane == BACKWARD else self.forward)[dest].append(msg)
            core.outbox.clear()

    def _deliver(self) -> bool:
        progressed = False
        for name, core in self.cores.items():
            queue = self.backward[name]
            while queue:
                core.on_backward(queue.popleft())
                progressed = True
            queue = self.forward[name]
            while queue and core.ready:
                core.on_forward(queue.popleft())
                progressed = True
        return progressed

    def run(self, until_step: int | None = None) -> list[Message]:
        """Run until the source's budget and final evaluation have drained (or, with
        `until_step`, until it has sent that many step ids and every message is delivered:
        a consistent cut, as a checkpoint takes); return the reports."""
        while True:
            self._route()
            if self._deliver():
                continue
            self._route()
            if any(self.forward.values()) or any(self.backward.values()):
                continue
            if until_step is not None and self.source.clock + 1 >= until_step:
                break
            if not self.source.produce():
                break
        self._route()
        return self.reports

    def evaluations(self) -> list[dict]:
        """The evaluation reports (test accuracy and loss per evaluation round)."""
        return [m.meta for m in self.reports if m.kind == Kind.METRICS and "eval" in m.meta]


def run_locally(plan) -> LocalRunner:
    """Build every agent of a `RunPlan` (orchestrator/plan.py) in this process and run it to the end."""
    runner = LocalRunner({name: build_core(plan.agents[name]) for name in plan.order})
    runner.run()
    return runner
