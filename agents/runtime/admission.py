"""Receive-side checks of every data message against the agent's plan, before torch sees it.

The codec (protocol/codec.py) already refuses what is not a well-formed message.  A
well-formed message may still not fit this agent: another run's, from an agent with no link
to the port, with a tensor of the wrong name, dtype or shape.  `Admission` answers, for each
decoded data message, the reason it does not fit (or None), from the plan alone:

    reason   the message ...
    decode   could not be decoded (counted by the process loop; the codec says why)
    run      carries another run's id
    kind     is a kind this plane does not carry (e.g. a GRAD on the forward socket)
    sender   comes from an agent with no link to that port of this agent
    port     names a port this agent does not have, or that takes no messages
    tensor   does not hold exactly the tensor the link carries (`x` forward, `g` backward)
    dtype    holds an integer or boolean tensor where an activation or gradient must be floating
    shape    has a shape other than the plan's (the batch dimension is free, within the
             run's batch sizes)
    label    holds class labels (port `labels`) that are not integers in 0..classes-1
    nonfinite holds a NaN or inf in an activation or gradient (unless run.on_nonfinite is
             "warn", under which they travel on)
    step     is for a step that is done, already here, or too far ahead (the stepper decides)

Messages that fail are dropped and counted by reason (`AgentCore.reject`); the agent lives
on.  `RejectLog` writes the first few of each reason in full and then one line per interval.
"""

from __future__ import annotations

import time

import numpy as np

from ...protocol.kinds import Kind
from ...protocol.message import Message
from ...protocol.plan import AgentPlan

REASONS = ("decode", "run", "kind", "sender", "port", "tensor", "dtype", "shape", "label", "nonfinite", "step")
LABELS = "labels"  # the context port of class labels (heads, cDNI SG hosts)


def _floating(array: np.ndarray) -> bool:
    # bfloat16 (ml_dtypes) is not a numpy floating kind but is a float on the wire.
    return array.dtype.kind == "f" or array.dtype.name == "bfloat16"


class Admission:
    """Which data messages fit one agent's plan (see the module docstring for the reasons).

    Forward: port -> (sender, kind, per-message shape, floating required).  A port fed by a
    faster sender takes one message per sender tick, so its per-message shape drops the
    stacked leading dimension of `in_shapes`.  Backward: (sender, port) -> per-message shape
    of this agent's output on that port.
    """

    def __init__(self, plan: AgentPlan) -> None:
        self.forward_ports: dict[str, tuple[str, Kind, tuple[int, ...], bool]] = {}
        for link in plan.in_links:
            shape = tuple(plan.in_shapes[link.dst_port])
            if link.messages_per_block > 1:
                shape = shape[1:]
            kind = Kind.CTX if link.context else Kind.ACT
            self.forward_ports[link.dst_port] = (link.src, kind, shape, not link.context)
        self.backward_ports: dict[tuple[str, str], tuple[int, ...]] = {
            (link.dst, link.src_port): tuple(plan.out_shapes[link.src_port])
            for link in plan.out_links
            if not link.context and link.mode.carries_gradient
        }
        # Links of mode `none`: a gradient on one is of a kind this link never carries.
        self.gradient_free = {(link.dst, link.src_port) for link in plan.out_links if not link.context and not link.mode.carries_gradient}
        self.max_batch = max(plan.run.batch_size, plan.run.eval_batch_size)
        # Under "stop" and "skip" no agent of the run sends a NaN or inf (it stops, or sends
        # zeros: agents/runtime/nonfinite.py), so one that arrives is refused; under "warn"
        # they travel on, as the user asked.
        self.finite_only = plan.run.on_nonfinite != "warn"
        # Class labels index a loss or a one-hot: anything but an integer in 0..classes-1
        # would crash the module (or train on a truncated float).
        self.num_classes = plan.num_classes

    def _tensor(self, msg: Message, name: str, shape: tuple[int, ...], floating: bool) -> str | None:
        if set(msg.tensors) != {name}:
            return "tensor"
        array = msg.tensors[name]
        if floating and not _floating(array):
            return "dtype"
        if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape or not 1 <= array.shape[0] <= self.max_batch:
            return "shape"
        if floating and self.finite_only and not np.isfinite(array).all():
            return "nonfinite"
        if msg.port == LABELS and (array.dtype.kind not in "iu" or (array.size and not 0 <= array.min() <= array.max() < self.num_classes)):
            return "label"
        return None

    def forward(self, msg: Message) -> str | None:
        """The reason a message on the forward socket does not fit, or None."""
        entry = self.forward_ports.get(msg.port)
        if entry is None:
            return "port"
        src, kind, shape, floating = entry
        if msg.kind != kind:
            return "kind"
        if msg.src != src:
            return "sender"
        return self._tensor(msg, "x", shape, floating)

    def backward(self, msg: Message) -> str | None:
        """The reason a message on the backward socket does not fit, or None."""
        if msg.kind not in (Kind.GRAD, Kind.SYNTH_GRAD):
            return "kind"
        shape = self.backward_ports.get((msg.src, msg.port))
        if (msg.src, msg.port) in self.gradient_free:
            return "kind"
        if shape is None:
            return "sender" if msg.port in {p for _, p in self.backward_ports} else "port"
        return self._tensor(msg, "g", shape, True)


class RejectLog:
    """Rate-limited log lines for rejected messages: the first `first` of each reason in
    full, then at most one summary line per `interval_s` with the counts since the last."""

    def __init__(self, log, name: str, first: int = 5, interval_s: float = 10.0) -> None:
        self.log, self.name, self.first, self.interval_s = log, name, first, interval_s
        self.seen: dict[str, int] = {}
        self.quiet: dict[str, int] = {}
        self.next_summary = 0.0

    def __call__(self, reason: str, detail: str) -> None:
        count = self.seen[reason] = self.seen.get(reason, 0) + 1
        if count <= self.first:
            more = " (further ones are summarised)" if count == self.first else ""
            self.log.warning("%s: rejected a message (%s): %s%s", self.name, reason, detail, more)
            return
        self.quiet[reason] = self.quiet.get(reason, 0) + 1
        now = time.monotonic()
        if now >= self.next_summary:
            counts = ", ".join(f"{r} {n}" for r, n in sorted(self.quiet.items()))
            self.log.warning("%s: rejected %d more messages (%s)", self.name, sum(self.quiet.values()), counts)
            self.quiet.clear()
            self.next_summary = now + self.interval_s
