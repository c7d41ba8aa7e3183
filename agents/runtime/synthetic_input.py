"""Complete unlock (link mode `unlocked`): synthetic-input models and the step order they need.

A layer on an `unlocked` in-link owns a `SyntheticInputModel` that predicts that input from
the data `x`, which the source sends it directly (plan.py adds the route to the context port
`data`).  Each training step *s* then runs in two phases, always in this order:

- **A(s), synthetic step**, as soon as `x(s)` (and any label context) is here: forward the
  *predicted* input, take the output's synthetic gradient (or the loss, for a head), backward,
  optimiser step.  The gradient with respect to the predicted input is kept: it becomes the
  upstream link's gradient target.  Nothing goes downstream yet.
- **B(s), real step**, when the real input `h(s)` arrives: regress the synthetic-input model
  onto it (L2), send the kept gradient upstream as the target for step *s*, and forward the
  real input (no gradient, current parameters) to send the real output downstream, so the
  real chain keeps flowing and feeds the next layer's regression target and evaluation.

Why this order and not "whatever arrives first": the agent's state after each phase must not
depend on message timing, or a process run would differ from the single-process run.  Steps
are therefore handled strictly in step order, A(s) -> B(s) -> A(s+1): the layer updates on a
step without waiting for that step's real input, but it does wait for the *previous* step's
real input before its next update (a one-step lag, never a wait for a gradient).  Its update
overlaps with the upstream layer's work on the same step; only the cheap real forward stays on
the chain's critical path.  B(s) uses the parameters A(s) left, and the target sent in B(s)
reaches the upstream sender after it cached step *s* (it sent `h(s)` only after that), so no
target is ever dropped.  Evaluation steps use the real chain and keep the same order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ...protocol.kinds import Kind
from ...protocol.message import Message
from ...protocol.plan import LinkPlan
from ..base import Shape
from .interfaces import Regressor
from .torchwire import to_tensor

if TYPE_CHECKING:  # the stepper builds this schedule; this module never imports it at run time
    from .stepper import ModuleStepper

DATA_PORT = "data"  # the context port on which an unlocked layer receives the source's x



class SyntheticInputModel(nn.Module):
    """Predicts a layer's input h from the data x: an MLP (the paper: one hidden layer)."""

    def __init__(self, x_shape: Shape, h_shape: Shape, hidden: list[int]) -> None:
        super().__init__()
        self.h_shape = tuple(h_shape)
        layers: list[nn.Module] = []
        fan_in = math.prod(x_shape)
        for width in hidden:
            layers += [nn.Linear(fan_in, width), nn.ReLU()]
            fan_in = width
        layers.append(nn.Linear(fan_in, math.prod(self.h_shape)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1)).reshape(x.shape[0], *self.h_shape)


class HostedInput(Regressor):
    """A synthetic-input model with its optimiser, regression step and running loss."""

    def __init__(self, link: LinkPlan, x_shape: Shape, h_shape: Shape, lr: float) -> None:
        model = SyntheticInputModel(x_shape, h_shape, list(link.sg.input_hidden))
        super().__init__(model, link.sg.lr or lr)
        self.link = link

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x)

    def learn(self, x: torch.Tensor, h: torch.Tensor) -> None:
        self.fit(self.model(x), h)


class UnlockedSchedule:
    """Runs an agent with `unlocked` inputs in the strict order A(s), B(s), A(s+1), ...

    Inputs are buffered by step until the phase at the cursor has what it needs; A needs
    every port except the unlocked ones, B (and an evaluation step) needs every port.
    """

    def __init__(self, core: ModuleStepper, lr: float) -> None:
        self.core = core
        in_shapes = core.plan.in_shapes
        self.inputs = {
            port: HostedInput(link, in_shapes[DATA_PORT], in_shapes[port], lr)
            for port, link in core.in_links.items()
            if link.mode.has_synthetic_input and not link.context
        }
        self.cursor = 0  # the next step to finish; every agent sees every step id from 0
        self.pending: dict[int, dict[str, tuple[np.ndarray, dict]]] = {}
        self.synthetic_done = False  # A(cursor) has run
        self.held: dict[str, torch.Tensor] = {}  # A(cursor)'s gradients w.r.t. predicted inputs
        self.rejoining = False  # ModuleStepper.rejoin: skip to the next complete step
        self.incomplete = 0  # steps skipped with only some of their inputs

    def on_forward(self, msg: Message) -> None:
        """Buffer one input; run every phase that is now due."""
        if msg.step < self.cursor or (not self.rejoining and msg.step > self.cursor + self.core.step_window):
            self.core.reject("step")  # done already, or too far ahead to be real
            return
        ports = self.pending.setdefault(msg.step, {})
        if msg.port in ports:
            self.core.reject("step")  # a second message for the same step and port
            return
        ports[msg.port] = (msg.tensors["x"], msg.meta)
        self._advance()

    def _skip_holes(self) -> None:
        """Rejoining: move the cursor to the first step whose inputs are all here, dropping
        the incomplete ones before it (steps a peer went on without this agent)."""
        complete = [s for s, ports in self.pending.items() if len(ports) == len(self.core.required)]
        if complete and min(complete) > self.cursor:
            first = min(complete)
            for stale in [s for s in self.pending if s < first]:
                del self.pending[stale]
                self.incomplete += 1
            self.cursor, self.synthetic_done, self.held = first, False, {}

    def _advance(self) -> None:
        core = self.core
        if self.rejoining:
            self._skip_holes()
        while (inputs := self.pending.get(self.cursor)) is not None:
            meta = next(iter(inputs.values()))[1]
            complete = len(inputs) == len(core.required)
            if "eval" in meta:
                if not complete:
                    return
                core.run_step(self.cursor, self.pending.pop(self.cursor))
                self.cursor += 1
                continue
            if not self.synthetic_done:
                if not set(core.required) - set(self.inputs) <= set(inputs):
                    return
                self._synthetic_step(self.cursor, inputs)
                self.synthetic_done = True
            if not complete:
                return
            self._real_step(self.cursor, self.pending.pop(self.cursor))
            self.synthetic_done = False
            self.rejoining = False
            self.cursor += 1

    def _synthetic_step(self, step: int, inputs: dict) -> None:
        core = self.core
        context = core.context_of(inputs)
        data = context[DATA_PORT]
        xs: dict[str, torch.Tensor] = {}
        for port, link in core.in_links.items():
            if link.context:
                continue
            x = self.inputs[port].predict(data) if port in self.inputs else to_tensor(inputs[port][0])
            if link.mode.carries_gradient and not link.from_source:
                x.requires_grad_(True)
            xs[port] = x
        self.held = {}
        # Batch-norm's running statistics are what evaluation uses on the real chain: only
        # real inputs (phase B) move them, so A freezes them (momentum 0) for its forward.
        norms = [m for m in core.agent.module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0
        try:
            core.train_step(step, xs, context, synthetic=set(self.inputs), held=self.held)
        finally:
            for m, momentum in zip(norms, saved, strict=True):
                m.momentum = momentum

    def _real_step(self, step: int, inputs: dict) -> None:
        core = self.core
        data = to_tensor(inputs[DATA_PORT][0])
        xs = {p: to_tensor(inputs[p][0]) for p, link in core.in_links.items() if not link.context}
        for port, hosted in self.inputs.items():
            with core.tracer.span("si_regression", step):
                hosted.learn(data, xs[port])
            link = hosted.link
            grad = self.held.pop(port, None)
            if grad is not None and core.receivers[link.index].returns_gradient:
                core.send_upstream(link, Kind.GRAD, step, grad)
        if core.out_links:
            # The real chain: this step's real output, from the parameters A(step) left.
            with torch.no_grad(), core.tracer.span("forward", step):
                outputs = core.agent.forward(xs)
            core.send_forward(step, outputs)

    def take_losses(self) -> dict[str, float]:
        """Mean regression loss per synthetic-input model since the last call."""
        out = {}
        for hosted in self.inputs.values():
            loss = hosted.take_loss()
            if loss is not None:
                out[f"si_loss.{hosted.link.label}"] = loss
        return out

    def state(self) -> dict:
        return {port: hosted.state() for port, hosted in self.inputs.items()}

    def load(self, state: dict) -> None:
        for port, hosted in self.inputs.items():
            hosted.load(state[port])
