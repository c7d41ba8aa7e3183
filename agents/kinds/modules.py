"""Torch modules of the built-in agent kinds, built from a topology's plain parameters.

`build_module(kind, params, in_shape)` is the one place that turns an agent's parameters into
its module; the runtime, `synthgrad compose` and the fabric cost model all call it, so the
module that trains is the module that is composed and costed.
"""

from __future__ import annotations

import math

from torch import nn

from ..base import Shape
from ..errors import ParamError

MAX_UNITS = 1_000_000  # widths, channels, classes: beyond this a value is a typo

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "none": nn.Identity}


def _activation(params: dict, key: str, default: str) -> nn.Module:
    name = params.get(key, default)
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ParamError(key, f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _flat_input(params: dict, in_shape: Shape) -> list[nn.Module]:
    """Flatten a multi-dimensional input, then the optional input activation."""
    layers: list[nn.Module] = [nn.Flatten()] if len(in_shape) > 1 else []
    # An activation on the way *in* lets the module boundary sit at the pre-activation, where a
    # synthetic gradient is easier to predict (docs/results.md, "What mattered for plain DNI").
    if params.get("input_activation", "none") != "none":
        layers.append(_activation(params, "input_activation", "none"))
    return layers


def _count(params: dict, key: str, default: int | None = None, least: int = 1) -> int:
    """A parameter that must be a whole number >= `least` (not a bool, string or float)."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_UNITS:
        raise ParamError(key, f"must be an integer in {least}..{MAX_UNITS:,}, got {value!r}")
    return value


def _flag(params: dict, key: str, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise ParamError(key, f"must be true or false, got {value!r}")
    return value


def _dense(params: dict, in_shape: Shape) -> tuple[nn.Module, Shape]:
    width = _count(params, "width")
    layers = _flat_input(params, in_shape)
    batch_norm = _flag(params, "batch_norm", True)
    # No bias before batch-norm: BN removes it, its true gradient is zero, and Adam would turn
    # rounding noise in that zero into full-size steps.
    layers.append(nn.Linear(math.prod(in_shape), width, bias=not batch_norm))
    if batch_norm:
        layers.append(nn.BatchNorm1d(width))
    layers.append(_activation(params, "activation", "relu"))
    return nn.Sequential(*layers), (width,)


def _conv(params: dict, in_shape: Shape) -> tuple[nn.Module, Shape]:
    if len(in_shape) != 3:
        raise ValueError(f"conv needs a (channels, height, width) input, got {in_shape}")
    channels, height, width = in_shape
    out_ch = _count(params, "channels")
    k = _count(params, "kernel", 5)
    pool = _count(params, "pool", 2)
    batch_norm = _flag(params, "batch_norm", True)
    layers: list[nn.Module] = [nn.Conv2d(channels, out_ch, k, padding=k // 2, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_ch))
    layers.append(_activation(params, "activation", "relu"))
    if pool > 1:
        layers.append(nn.MaxPool2d(pool))
        height, width = height // pool, width // pool
    return nn.Sequential(*layers), (out_ch, height, width)


def _head(params: dict, in_shape: Shape) -> tuple[nn.Module, Shape]:
    classes = _count(params, "classes", least=2)
    layers = _flat_input(params, in_shape)
    layers.append(nn.Linear(math.prod(in_shape), classes))
    return nn.Sequential(*layers), (classes,)


BUILDERS = {"dense": _dense, "conv": _conv, "head": _head}


def build_module(kind: str, params: dict, in_shape: Shape) -> tuple[nn.Module, Shape]:
    """Build the module of a built-in kind; returns it and its output shape (no batch dim).

    Raises:
        ValueError: for an unknown kind or parameters that do not fit the input shape.
    """
    try:
        builder = BUILDERS[kind]
    except KeyError:
        raise ValueError(f"no module builder for kind {kind!r}; known: {sorted(BUILDERS)}") from None
    return builder(params, tuple(int(d) for d in in_shape))
