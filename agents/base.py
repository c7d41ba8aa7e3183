"""The public plug-in API: subclass `Agent`, declare ports and a module; the runtime does the rest.

An agent kind is a small class.  It names its input and output ports, the parameters it
accepts, and builds a torch module from its input shapes.  Messaging, joining inputs by step,
synthetic gradients, gradient targets, optimisers, metrics and checkpoints are the runtime's
job (`synthgrad.agents.runtime.core`), so a kind never touches a socket.

Example (a complete kind; see docs/writing-an-agent.md)::

    class Scale(Agent):
        kind = "scale"
        defaults = {"factor": 2.0}

        def build(self, in_shapes):
            return Affine(self.params["factor"]), {"out": in_shapes["in"]}
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..protocol.plan import Shape

REQUIRED = object()  # marks a parameter with no default in `Agent.defaults`


class Agent:
    """Base class of every agent kind that owns a trainable module.

    Class attributes a kind sets:
        kind: the registered name used in topology files (`kind = "dense"`).
        inputs: data input ports; their activations arrive from upstream and, on links that
            carry gradients, get a gradient sent back.
        outputs: output ports; each returns a tensor from `forward`.
        context_inputs: ports that receive context (e.g. labels); no gradient crosses them.
        defaults: every parameter the kind accepts, with its default or `REQUIRED`.
        terminal: True for a kind that computes the task loss (a head).
    """

    kind: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("in",)
    outputs: ClassVar[tuple[str, ...]] = ("out",)
    context_inputs: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    terminal: ClassVar[bool] = False

    def __init__(self, name: str, params: dict) -> None:
        self.name = name
        self.params = {**self.defaults, **params}
        self.module: nn.Module | None = None

    def build(self, in_shapes: dict[str, Shape]) -> tuple[nn.Module, dict[str, Shape]]:
        """Create the module for these input shapes; return it and the output shapes."""
        raise NotImplementedError

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map input tensors by port to output tensors by port (default: one in, one out)."""
        assert self.module is not None
        (port,) = self.inputs
        (out,) = self.outputs
        return {out: self.module(inputs[port])}

    def act(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An acting step's outputs (RL, docs/rl.md): a policy head turns its forward's
        outputs into the answer it sends the env agent; other kinds pass them on as they are."""
        return outputs

    def loss(
        self, outputs: dict[str, torch.Tensor], context: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Terminal kinds: the task loss and per-batch metrics (e.g. accuracy)."""
        raise NotImplementedError(f"{type(self).__name__} is not terminal")

    def evaluate(
        self, outputs: dict[str, torch.Tensor], context: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        """Terminal kinds: sums over one evaluation batch (`correct`, `total`, `loss_sum`)."""
        raise NotImplementedError(f"{type(self).__name__} is not terminal")


class Source:
    """Base class of data sources: agents with no module that emit batches.

    A source emits `train_batch()` for every training step and, at each evaluation, every
    batch of `eval_batches()`; each output port's array goes to the links from that port.
    """

    kind: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ("x", "y")
    context_inputs: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    terminal: ClassVar[bool] = False
    #: the output port that carries labels, sent as context to cDNI interfaces and heads
    label_port: ClassVar[str] = "y"

    def __init__(self, name: str, params: dict) -> None:
        self.name = name
        self.params = {**self.defaults, **params}

    def output_shapes(self) -> dict[str, Shape]:
        """Shapes (no batch dimension) of each output port."""
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    def steps_per_epoch(self, batch_size: int) -> int:
        raise NotImplementedError

    @property
    def train_size(self) -> int | None:
        """Examples in the training set, known without loading it, so that the planner can
        refuse a batch larger than the data set; None for a stream with no end (generated)."""
        return None

    def open(self, batch_size: int, seed: int) -> None:
        """Load data; called once in the agent's process before the run starts."""

    def train_batch(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def eval_batches(self, batch_size: int):
        """Yield every evaluation batch once, in order, as dicts of arrays by port."""
        raise NotImplementedError


def missing_params(cls: type, params: dict) -> list[str]:
    """The parameters a kind requires that `params` does not give."""
    return [k for k, v in cls.defaults.items() if v is REQUIRED and k not in params]
