"""Built-in module kinds: `dense` and `conv` layers and the classification `head`."""

from __future__ import annotations

import torch.nn.functional as F

from ..base import REQUIRED, Agent, Shape
from .modules import build_module


class ModuleAgent(Agent):
    """An agent whose module comes from `build_module(module_kind, params, in_shape)`."""

    module_kind = ""

    def build(self, in_shapes: dict[str, Shape]):
        module, out_shape = build_module(self.module_kind, self.params, in_shapes["in"])
        return module, {"out": out_shape}


class Dense(ModuleAgent):
    """Linear -> BatchNorm -> activation: the paper's feed-forward layer."""

    kind = "dense"
    module_kind = "dense"
    defaults = {
        "width": REQUIRED,
        "batch_norm": True,
        "activation": "relu",
        "input_activation": "none",
        "lr": None,
    }


class Conv(ModuleAgent):
    """Conv (5x5 by default) -> BatchNorm -> activation -> max-pool: the paper's CNN layer."""

    kind = "conv"
    module_kind = "conv"
    defaults = {
        "channels": REQUIRED,
        "kernel": 5,
        "pool": 2,
        "batch_norm": True,
        "activation": "relu",
        "lr": None,
    }


class Head(ModuleAgent):
    """Linear classifier with softmax cross-entropy; reports loss and accuracy."""

    kind = "head"
    module_kind = "head"
    outputs = ("logits",)
    context_inputs = ("labels",)
    terminal = True
    defaults = {"classes": REQUIRED, "input_activation": "none", "lr": None}

    def build(self, in_shapes: dict[str, Shape]):
        module, out_shape = build_module("head", self.params, in_shapes["in"])
        return module, {"logits": out_shape}

    def loss(self, outputs, context):
        logits, labels = outputs["logits"], context["labels"].long()
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(1) == labels).float().mean()
        return loss, {"accuracy": float(accuracy)}

    def evaluate(self, outputs, context):
        logits, labels = outputs["logits"], context["labels"].long()
        return {
            "correct": float((logits.argmax(1) == labels).sum()),
            "total": float(labels.numel()),
            "loss_sum": float(F.cross_entropy(logits, labels, reduction="sum")),
        }
