"""What every agent's step logic shares: the outbox, counters, metrics and the plan it runs.

An agent's step logic is a transport-free state machine: it takes decoded messages in and
leaves messages to send in its `outbox`; it knows nothing of sockets.  The process runtime
(`process.py`) feeds it from ZeroMQ and the single-process runner (`local.py`) from a queue,
so one implementation of DNI serves both, and the single-process baselines measure exactly
the same arithmetic.  There are two jobs, one class each over the base `AgentCore` here:

- `SourceDriver` (source_driver.py): a data source's training and evaluation batches;
- `ModuleStepper` (stepper.py): a module agent's forward, synthetic gradients, updates.

`build.build_core(plan)` builds the right one from an `AgentPlan` (protocol/plan.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...protocol.kinds import Kind
from ...protocol.message import Message
from ...protocol.plan import AgentPlan, RunSettings
from .trace import NULL_TRACER

CONTROL = "@control"  # outbox destination meaning "the orchestrator"
FORWARD, BACKWARD = "fwd", "bwd"  # the two data planes every agent binds

Outgoing = tuple[str, str, Message]  # (destination agent or CONTROL, plane, message)


def make_optimizer(params, run: RunSettings, lr: float | None) -> torch.optim.Optimizer:
    """The optimiser a run's settings name (`run.optimizer`, `run.lr` or the agent's `lr`)."""
    rate = lr or run.lr
    if run.optimizer == "sgd":
        return torch.optim.SGD(params, lr=rate)
    if run.optimizer == "rmsprop":  # SB3's A2C: alpha 0.99 (torch's default too)
        return torch.optim.RMSprop(params, lr=rate, alpha=0.99, eps=run.eps)
    return torch.optim.Adam(params, lr=rate, eps=run.eps)


def evaluation_summary(sums: dict[str, float]) -> dict[str, float]:
    """Accuracy and mean loss from the sums a terminal kind's `evaluate` returns."""
    total = max(sums.get("total", 0.0), 1.0)
    return {"test_accuracy": sums.get("correct", 0.0) / total, "test_loss": sums.get("loss_sum", 0.0) / total}


@dataclass
class Running:
    """Means reported and reset at each metrics flush."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value
        self.counts[key] = self.counts.get(key, 0) + 1

    def take(self) -> dict[str, float]:
        out = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums, self.counts = {}, {}
        return out


class AgentCore:
    """The base of both jobs: an agent's name, plan, outbox, counters and running metrics.

    Attributes:
        plan: the agent's `AgentPlan`; `run` its `RunSettings`.
        outbox: messages to send, ``(destination, plane, message)``; the caller empties it.
        steps: training steps this agent has completed.
        rejected: messages dropped because they did not fit (never fatal); `rejects` counts
            them by reason (agents/runtime/admission.py lists the reasons).
        finished: True once the agent has nothing more to do in this run.
    """

    is_source = False
    tracer = NULL_TRACER  # the process runtime sets a Tracer under `synthgrad run --trace`

    def __init__(self, agent, plan: AgentPlan) -> None:
        self.agent = agent
        self.plan = plan
        self.name = plan.name
        self.run = plan.run
        self.outbox: list[Outgoing] = []
        self.steps = 0
        self.rejected = 0
        self.rejects: dict[str, int] = {}
        self.running = Running()
        self.finished = False
        self.out_links = plan.out_links

    @property
    def ready(self) -> bool:
        """Whether the agent may take (or make) its next forward input."""
        return True

    def send(self, dest: str, plane: str, kind: Kind, port: str, step: int, tensors, meta=None) -> None:
        """Queue a data message for agent `dest` on `plane` (FORWARD or BACKWARD)."""
        msg = Message(kind=kind, src=self.name, port=port, step=step, tensors=tensors, meta=meta or {})
        self.outbox.append((dest, plane, msg))

    def report(self, kind: Kind, meta: dict) -> None:
        """Queue a control message (metrics, error) for the orchestrator."""
        self.outbox.append((CONTROL, "", Message(kind=kind, src=self.name, step=self.steps, meta=meta)))

    def reject(self, reason: str) -> None:
        """Count a message that does not fit, under `reason`; it is dropped, never fatal."""
        self.rejected += 1
        self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def on_forward(self, msg: Message) -> None:
        """An activation or context message; the base has no inputs, so it is rejected."""
        self.reject("port")

    def on_backward(self, msg: Message) -> None:
        """A gradient message; the base sends nothing downstream, so it is rejected."""
        self.reject("port")

    def take_metrics(self) -> dict[str, float]:
        """Means since the last call and the counters (`rejected`, `rejected.REASON`)."""
        counts = {f"rejected.{reason}": n for reason, n in sorted(self.rejects.items())}
        return {"steps": self.steps, "rejected": self.rejected, **counts, **self.running.take()}

    @property
    def clock(self) -> int:
        """The newest step id (the source's clock) this agent has acted on; -1 before any."""
        return -1

    def state_dict(self) -> dict:
        """What a checkpoint holds of this agent (agents/runtime/checkpoint.py writes it)."""
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a `state_dict()` (a restart or `synthgrad run --resume`)."""
        self.steps = int(state["steps"])

    def rejoin(self) -> None:
        """After a restore while its peers went on: accept the next input whatever its step."""

    def abandon(self, peer: str) -> int:
        """`peer` restarted: give up waiting for what it will never send; the waits dropped."""
        return 0

