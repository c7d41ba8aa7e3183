"""Costs from real modules: FLOPs counted with forward hooks, a topology turned into a Workload.

`count_flops(module, in_shape, batch)` runs the module once on zeros with a hook on every leaf
and prices each leaf from its tensors' shapes: Linear, Conv1d/2d, BatchNorm, LSTM / GRU / RNN
and their cells, pooling, activations.  A backward pass costs twice the forward (the input and
the weight gradient are each a product as large as the forward's), an Adam step 12 FLOPs per
parameter.  Counting runs at batch 2 and scales: every layer here is linear in the batch.

`costs_from_topology(topology, module_builder=...)` propagates shapes through the agents in
link order, builds each module with the injected builder (default: the runtime's own
`synthgrad.agents.kinds.modules.build_module`, so the module costed is the module trained), sizes
each link's SG model (and, for `unlocked`, its synthetic-input model) and returns a `Workload`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...protocol.plan import LinkMode, SGOptions, Shape
from .costs import ADAM_FLOPS_PER_PARAM, SGD_FLOPS_PER_PARAM, AgentCost, LinkCost, Workload

Builder = Callable[[str, dict, Shape], tuple[nn.Module, Shape]]
LABEL_PORTS = ("labels", "y")  # ports that carry class labels, not activations
LABEL_BYTES = 8  # int64 on the wire
_PROBE = 2  # batch the module is run at; FLOPs scale linearly from it
_ELEMENTWISE = {nn.ReLU: 1, nn.LeakyReLU: 1, nn.Tanh: 4, nn.Sigmoid: 4, nn.GELU: 8, nn.SiLU: 5,
                nn.Softmax: 5, nn.LogSoftmax: 5}


@dataclass(frozen=True)
class FlopCount:
    """One forward pass of a module at a batch size."""

    forward: float
    params: int
    activations: float  # elements autograd keeps for backward (input + every leaf's output)
    out_shape: Shape
    unknown: tuple[str, ...] = ()  # leaf types priced by the fallback rule

    @property
    def backward(self) -> float:
        return 2.0 * self.forward


def _numel(x) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel()
    if isinstance(x, tuple | list):
        return sum(_numel(t) for t in x)
    return 0


def _first(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else _first(x[0])


def _recurrent(m: nn.Module, x: torch.Tensor) -> float:
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[type(m).__name__.replace("Cell", "")]
    hidden = m.hidden_size
    steps = x.numel() / x.shape[-1]  # rows x time steps
    per_step = 0.0
    layers = getattr(m, "num_layers", 1)
    dirs = 2 if getattr(m, "bidirectional", False) else 1
    fan_in = m.input_size
    for _ in range(layers):
        per_step += dirs * (2 * gates * hidden * (fan_in + hidden) + 2 * gates * hidden + 8 * gates * hidden)
        fan_in = hidden * dirs
    return steps * per_step


def _leaf_flops(m: nn.Module, inputs: tuple, output) -> float | None:
    x = inputs[0] if inputs else None
    out = _first(output)
    if isinstance(m, nn.Linear):
        return (2 * m.in_features + (1 if m.bias is not None else 0)) * out.numel()
    if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d):
        per_out = 2 * (m.in_channels // m.groups) * math.prod(m.kernel_size)
        return (per_out + (1 if m.bias is not None else 0)) * out.numel()
    if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
        return 5.0 * out.numel()
    if isinstance(m, nn.LSTM | nn.GRU | nn.RNN | nn.LSTMCell | nn.GRUCell | nn.RNNCell):
        return _recurrent(m, x)
    if isinstance(m, nn.MaxPool1d | nn.MaxPool2d | nn.AvgPool1d | nn.AvgPool2d):
        k, dims = m.kernel_size, 2 if type(m).__name__.endswith("2d") else 1
        return float(k**dims if isinstance(k, int) else math.prod(k)) * out.numel()
    for cls, per in _ELEMENTWISE.items():
        if isinstance(m, cls):
            return float(per) * out.numel()
    if isinstance(m, nn.Flatten | nn.Identity | nn.Dropout | nn.Unflatten):
        return 0.0
    return None


def count_flops(module: nn.Module, in_shape: Shape, batch: int) -> FlopCount:
    """FLOPs of one forward of `module` on a batch of `batch` inputs shaped `in_shape`.

    Leaves of unknown type cost 2 FLOPs per parameter per row and are named in `unknown`.
    """
    total = [0.0, float(math.prod(in_shape) * _PROBE)]  # flops, activation elements
    unknown: list[str] = []

    def hook(m: nn.Module, inputs: tuple, output) -> None:
        flops = _leaf_flops(m, inputs, output)
        if flops is None:
            flops = 2.0 * sum(p.numel() for p in m.parameters(recurse=False)) * _PROBE
            unknown.append(type(m).__name__)
        total[0] += flops
        total[1] += _numel(output)

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = module.training
    module.eval()  # BatchNorm needs no batch statistics to be counted
    try:
        with torch.no_grad():
            out = module(torch.zeros(_PROBE, *in_shape))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    scale = batch / _PROBE
    return FlopCount(forward=total[0] * scale, params=sum(p.numel() for p in module.parameters()),
                     activations=total[1] * scale, out_shape=tuple(_first(out).shape[1:]),
                     unknown=tuple(sorted(set(unknown))))


def _default_builder() -> Builder:
    from synthgrad.agents.kinds.modules import build_module

    return build_module


class _Recurrent(nn.Module):
    """Stand-in for a recurrent agent kind: one LSTM cell step per tick, emitting h."""

    def __init__(self, fan_in: int, hidden: int) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(fan_in, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cell(x.flatten(1))[0]


def stand_in_builder(kind: str, params: dict, in_shape: Shape) -> tuple[nn.Module, Shape]:
    """Modules for kinds the runtime's builder does not know yet: `rnn` (an LSTM cell of
    `hidden` units, one step per tick)."""
    if kind == "rnn":
        hidden = int(params.get("hidden", params.get("width", 256)))
        return _Recurrent(math.prod(in_shape), hidden), (hidden,)
    raise ValueError(f"no stand-in module for kind {kind!r}")


def _source_shapes(kind: str, name: str, params: dict) -> dict[str, Shape] | None:
    """Output shapes of a data source, from the agent registry; None if `kind` is no source."""
    try:
        from synthgrad.agents.base import Source
        from synthgrad.agents.registry import resolve_kind

        cls = resolve_kind(kind)
    except Exception:  # not importable or not a registered kind: not a source we know
        return None
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        return None
    return {port: tuple(shape) for port, shape in cls(name, params).output_shapes().items()}


def _sg_model(features: int, sg: SGOptions, classes: int) -> nn.Module:
    """The SG model of a link, as agents/runtime/interfaces.py builds it: linear or an MLP."""
    fan_in = features + (classes if sg.context else 0)
    layers: list[nn.Module] = []
    if sg.model != "linear":
        for width in sg.hidden or [features]:
            layers += [nn.Linear(fan_in, width), nn.BatchNorm1d(width), nn.ReLU()]
            fan_in = width
    layers.append(nn.Linear(fan_in, features))
    return nn.Sequential(*layers)


def _si_model(data: int, features: int, sg: SGOptions) -> nn.Module:
    """A synthetic-input model (agents/runtime/synthetic_input.py): an MLP from the data x."""
    layers: list[nn.Module] = []
    fan_in = data
    for width in sg.input_hidden:
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, features))
    return nn.Sequential(*layers)


def costs_from_topology(topology, batch: int | None = None, module_builder: Builder | None = None,
                        dtype_bytes: int = 2, source_shapes: Callable | None = None) -> Workload:
    """The Workload of a topology (see module docstring), at `batch` (default run.batch_size).

    `source_shapes(kind, name, params)` gives a data source's port shapes (None for agents that
    are not sources); by default the agent registry answers.  Links out of a source carry no
    gradient.  Sizes are in `dtype_bytes` per element (bf16: 2); labels are int64.
    """
    builder = module_builder or _default_builder()
    notes: list[str] = []
    shapes_of = source_shapes or _source_shapes
    batch = int(batch or topology.run.batch_size)
    optimizer = topology.run.optimizer
    per_param = (4 if optimizer == "adam" else 2) * dtype_bytes  # weights, grads, moments
    upd = ADAM_FLOPS_PER_PARAM if optimizer == "adam" else SGD_FLOPS_PER_PARAM
    order = _topological(topology)
    out_shapes: dict[str, dict[str, Shape]] = {}
    agents: list[AgentCost] = []
    sources: dict[str, Shape] = {}
    classes = 10
    for name in order:
        spec = topology.agents[name]
        src_ports = shapes_of(spec.kind, name, spec.params)
        if src_ports is not None:
            out_shapes[name] = src_ports
            sources[name] = next(iter(src_ports.values()))
            agents.append(AgentCost(name, kind=spec.kind, tick_every=spec.tick_every, rows=batch))
            continue
        data_in = [lk for lk in topology.links if lk.dst == name and lk.dst_port not in LABEL_PORTS]
        if not data_in:
            raise ValueError(f"agents.{name}: no link feeds its input, so its shape is unknown")
        shapes = [_port_shape(out_shapes, lk) for lk in data_in]
        in_shape = shapes[0] if len(shapes) == 1 else (sum(math.prod(s) for s in shapes),)
        try:
            module, out_shape = builder(spec.kind, spec.params, in_shape)
        except (ValueError, KeyError) as err:
            if module_builder is not None or spec.kind != "rnn":
                raise ValueError(f"agents.{name}: cannot build its module for costing: {err}") from None
            module, out_shape = stand_in_builder(spec.kind, spec.params, in_shape)
            notes.append(f"{name}: kind 'rnn' costed as one LSTM-cell step per tick (stand-in)")
        count = count_flops(module, in_shape, batch)
        fwd = count.forward + (5.0 * batch * math.prod(out_shape) if spec.kind == "head" else 0.0)
        if spec.kind == "head":
            classes = math.prod(out_shape)
        out_shapes[name] = {"": tuple(out_shape)}
        agents.append(AgentCost(name, fwd, 2 * fwd, upd * count.params, per_param * count.params,
                                count.activations * dtype_bytes, spec.tick_every, batch, spec.kind))
    data_features = math.prod(next(iter(sources.values()), (1,)))
    links = []
    for lk in topology.links:
        shape = _port_shape(out_shapes, lk)
        labels = lk.dst_port in LABEL_PORTS or lk.src_port in LABEL_PORTS or shape == ()
        nbytes = batch * (LABEL_BYTES if labels else math.prod(shape) * dtype_bytes)
        mode = LinkMode.NONE if labels or lk.src in sources else lk.mode
        cost = LinkCost(lk.src, lk.dst, float(nbytes), mode.value)
        if mode.has_sg_model:
            sg = lk.sg
            features = math.prod(shape)
            model = count_flops(_sg_model(features, sg, classes), (features + (classes if sg.context else 0),), batch)
            cost.sg_flops, cost.sg_bytes = model.forward, per_param * model.params
            cost.sg_train_flops = model.forward + model.backward + upd * model.params
            if mode.has_synthetic_input:
                si = count_flops(_si_model(data_features, features, sg), (data_features,), batch)
                cost.si_flops, cost.si_bytes = si.forward, per_param * si.params
                cost.si_train_flops = si.forward + si.backward + upd * si.params
        links.append(cost)
    return Workload(agents, links, batch, topology.run.name or "", notes)


def _port_shape(out_shapes: dict[str, dict[str, Shape]], link) -> Shape:
    ports = out_shapes[link.src]
    if link.src_port in ports:
        return ports[link.src_port]
    return next(iter(ports.values()))  # bare "agent": its default (first) port


def _topological(topology) -> list[str]:
    """Agents in an order where every link goes forward; a cycle is refused by name."""
    names = list(topology.agents)
    indeg = dict.fromkeys(names, 0)
    for lk in topology.links:
        indeg[lk.dst] += 1
    order = [n for n in names if indeg[n] == 0]
    for n in order:
        for lk in topology.links:
            if lk.src == n:
                indeg[lk.dst] -= 1
                if indeg[lk.dst] == 0:
                    order.append(lk.dst)
    if len(order) != len(names):
        stuck = sorted(set(names) - set(order))
        raise ValueError(f"links form a cycle through {', '.join(stuck)}; the fabric model needs a DAG")
    return order
