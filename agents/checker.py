"""`check_agent()`: the conformance check plug-in authors and our own tests run on a kind.

Like Gymnasium's `check_env`, it is a list of small checks, each failing with a message
that says what to fix.  It checks the class declaration, builds the module, runs a forward
pass, checks gradients reach the inputs and parameters, and finally runs one training step
and one evaluation step through the real `AgentCore` on a DNI link, so a kind that passes
works in the runtime.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..protocol import Kind, Message
from ..protocol.plan import AgentPlan, LinkMode, LinkPlan, RunSettings, SGOptions
from .base import REQUIRED, Agent, Shape, Source
from .runtime.build import build_core


class AgentCheckError(AssertionError):
    """A kind does not meet the Agent contract; the message says what to fix."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AgentCheckError(message)


def _check_declaration(cls: type) -> None:
    _require(isinstance(cls, type) and issubclass(cls, (Agent, Source)), f"{cls!r} must subclass Agent or Source")
    _require(isinstance(cls.kind, str) and cls.kind != "", f"{cls.__name__}.kind must be a non-empty string")
    ports = (*cls.inputs, *cls.outputs, *cls.context_inputs)
    _require(all(isinstance(p, str) and p for p in ports), f"{cls.__name__}: port names must be non-empty strings")
    _require(len(set(ports)) == len(ports), f"{cls.__name__}: port names must be unique across inputs and outputs")
    _require(bool(cls.outputs), f"{cls.__name__}.outputs must name at least one port")
    _require(isinstance(cls.defaults, dict), f"{cls.__name__}.defaults must be a dict of parameter -> default")


def _batch(shape: Shape, batch_size: int) -> torch.Tensor:
    return torch.randn(batch_size, *shape)


def _check_source(cls: type, params: dict, batch_size: int) -> None:
    source = cls("source", params)
    shapes = source.output_shapes()
    _require(set(shapes) == set(cls.outputs), f"output_shapes() must give exactly the ports {cls.outputs}, got {sorted(shapes)}")
    _require(cls.label_port in cls.outputs, f"label_port {cls.label_port!r} must be one of the outputs")
    source.open(batch_size, seed=0)
    batch = source.train_batch()
    for port, shape in shapes.items():
        arr = batch.get(port)
        _require(isinstance(arr, np.ndarray), f"train_batch()[{port!r}] must be a numpy array")
        _require(arr.shape == (batch_size, *shape), f"train_batch()[{port!r}] has shape {arr.shape}, expected {(batch_size, *shape)}")
    first = next(iter(source.eval_batches(batch_size)), None)
    _require(first is not None, "eval_batches() must yield at least one batch")


def _plan(cls: type, params: dict, in_shapes: dict, out_shapes: dict, classes: int) -> AgentPlan:
    """The plan of one agent "me" between an upstream agent and a downstream one, DNI links."""
    run = RunSettings(batch_size=0, lr=1e-3, steps=1)
    sg = SGOptions(cache=4)
    in_links = [LinkPlan(i, "up", "out", "me", p, LinkMode.DNI, sg) for i, p in enumerate(cls.inputs)]
    in_links += [
        LinkPlan(100 + i, "data", "y", "me", p, LinkMode.NONE, sg, context=True, from_source=True)
        for i, p in enumerate(cls.context_inputs)
    ]
    out_links = [
        LinkPlan(200 + i, "me", p, "down", "in", LinkMode.DNI, sg) for i, p in enumerate(cls.outputs) if not cls.terminal
    ]
    return AgentPlan(
        name="me", kind=cls.kind, params=params, run=run, num_classes=classes,
        in_shapes=dict(in_shapes), out_shapes=dict(out_shapes), in_links=tuple(in_links), out_links=tuple(out_links),
    )


def _check_in_runtime(
    cls: type, params: dict, in_shapes: dict, out_shapes: dict, batch_size: int, classes: int, context: dict | None = None, acting: bool = False
) -> None:
    core = build_core(_plan(cls, params, in_shapes, out_shapes, classes), cls("me", copy.deepcopy(params)))
    labels = np.arange(batch_size, dtype=np.int64) % classes
    # Step 0 trains, step 1 evaluates, or acts (every message of a run has its own step).
    second = {"act": 0} if acting else {"eval": 0, "last": True, "final": True, "train_steps": 1}
    for step, meta in enumerate(({}, second)):
        for port, shape in in_shapes.items():
            arr = np.random.default_rng(0).standard_normal((batch_size, *shape)).astype(np.float32)
            core.on_forward(Message(Kind.ACT, src="up", port=port, step=step, tensors={"x": arr}, meta=meta))
        if "act" in meta:
            continue  # an acting step takes no context
        for port in cls.context_inputs:
            given = labels if context is None else context[port]
            core.on_forward(Message(Kind.CTX, src="data", port=port, step=step, tensors={"x": given}, meta=meta))
    _require(core.steps == 1, "one training step through the runtime did not complete; are all inputs consumed?")
    kinds = [m.kind for _, _, m in core.outbox]
    if cls.inputs:
        _require(Kind.GRAD in kinds, "the runtime sent no gradient upstream: does forward() use its inputs?")
    if not cls.terminal:
        _require(kinds.count(Kind.ACT) == 2 * len(cls.outputs), "each output port must be sent in training and evaluation")
    elif acting:
        _require(core.last_block == 1, "the acting step did not run through the runtime")
    else:
        _require(Kind.METRICS in kinds, "a terminal kind must report its evaluation")


def check_agent(
    cls: type,
    params: dict | None = None,
    in_shapes: dict | None = None,
    batch_size: int = 4,
    classes: int = 10,
    context: dict | None = None,
) -> None:
    """Check that an agent kind meets the contract the runtime relies on.

    Args:
        cls: the kind's class (an `Agent` or `Source` subclass).
        params: parameters to build it with (required ones must be given); defaults fill the rest.
        in_shapes: input shapes by port, without the batch dimension (default (8,) each).
        batch_size: the batch size of the test batches.
        classes: the number of classes for label context and terminal kinds.
        context: arrays by context port, ``[batch_size, ...]``, for a terminal kind whose
            context is not class labels (a policy head's rollout rows, docs/rl.md).

    A kind that overrides `Agent.act` (a policy head) is checked on its acting answer: `act`
    of its forward's outputs must give exactly its output ports.  An environment kind (a
    source that `closes_loop`) is checked by making its environment and reading its spaces;
    check the environment itself with Gymnasium's `check_env`.

    Raises:
        AgentCheckError: with a message that names what to fix.
    """
    _check_declaration(cls)
    params = dict(params or {})
    missing = [k for k, v in cls.defaults.items() if v is REQUIRED and k not in params]
    _require(not missing, f"pass the required parameters {missing} in params=")
    if getattr(cls, "closes_loop", False):
        try:
            cls("me", params)
        except ValueError as err:
            raise AgentCheckError(f"the environment cannot be used: {err}") from None
        return
    if issubclass(cls, Source):
        _check_source(cls, params, batch_size)
        return
    in_shapes = {p: tuple(s) for p, s in (in_shapes or {p: (8,) for p in cls.inputs}).items()}
    _require(set(in_shapes) == set(cls.inputs), f"in_shapes must give every input port {cls.inputs}")
    agent = cls("me", params)
    built = agent.build(in_shapes)
    _require(isinstance(built, tuple) and len(built) == 2, "build() must return (module, output shapes by port)")
    module, out_shapes = built
    _require(isinstance(module, nn.Module), "build() must return a torch.nn.Module first")
    _require(set(out_shapes) == set(cls.outputs), f"build() must give shapes for exactly the ports {cls.outputs}")
    agent.module = module
    xs = {p: _batch(s, batch_size).requires_grad_(True) for p, s in in_shapes.items()}
    outputs = agent.forward(xs)
    acting = type(agent).act is not Agent.act
    answer = agent.act({k: v.detach() for k, v in outputs.items()}) if acting else outputs
    what = "act(forward())" if acting else "forward()"
    _require(isinstance(answer, dict) and set(answer) == set(cls.outputs), f"{what} must return a dict with the ports {cls.outputs}")
    for port, tensor in answer.items():
        _require(tuple(tensor.shape) == (batch_size, *out_shapes[port]), f"{what}[{port!r}] has shape {tuple(tensor.shape)}, build() said {(batch_size, *out_shapes[port])}")
    if cls.terminal:
        if context is None:
            _require(not acting, "pass context= (arrays by context port) for a policy head")
            context = {p: torch.arange(batch_size) % classes for p in cls.context_inputs}
        else:
            context = {p: torch.as_tensor(a) for p, a in context.items()}
        loss, metrics = agent.loss(outputs, context)
        _require(isinstance(loss, torch.Tensor) and loss.dim() == 0, "loss() must return a scalar tensor first")
        _require(all(isinstance(v, float) for v in metrics.values()), "loss() metrics must be floats")
        loss.backward()
        if not acting:  # a policy head is judged by its env's returns, not by evaluate()
            sums = agent.evaluate({k: v.detach() for k, v in outputs.items()}, context)
            _require({"correct", "total"} <= set(sums), "evaluate() must return at least 'correct' and 'total'")
    else:
        torch.autograd.backward(list(outputs.values()), [torch.ones_like(t) for t in outputs.values()])
    for port, x in xs.items():
        _require(x.grad is not None, f"no gradient reaches input {port!r}: forward() must use it differentiably")
    arrays = None if context is None else {p: np.asarray(t) for p, t in context.items()}
    _check_in_runtime(cls, params, in_shapes, {p: tuple(s) for p, s in out_shapes.items()}, batch_size, classes, arrays, acting)
