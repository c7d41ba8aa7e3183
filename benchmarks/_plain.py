"""The honest single-process baseline: a topology's modules in one nn.Sequential, one Adam.

Benchmarks compare agents against this loop (no runtime, no messages, no SG models); it is
built from the same plan, so the modules and the optimiser settings are the runtime's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from synthgrad.agents.runtime.core import make_optimizer
from torch import nn


class PlainChain:
    """The plan's non-source agents' modules in order, trained by plain backprop.

    Attributes: model (nn.Sequential), optimizer, source (opened at the run's batch size).
    """

    def __init__(self, plan) -> None:
        run = plan.topology.run
        torch.manual_seed(run.seed)
        layers = []
        for name in [n for n in plan.order if n != plan.source]:
            spec = plan.agents[name]
            module, _ = plan.classes[name](name, dict(spec.params)).build(
                {"in": spec.in_shapes["in"]}
            )
            layers.append(module)
        self.model = nn.Sequential(*layers)
        self.optimizer = make_optimizer(self.model.parameters(), run, None)
        self.source = plan.classes[plan.source](plan.source, dict(plan.agents[plan.source].params))
        self.source.open(run.batch_size, run.seed)
        self.eval_batch_size = run.eval_batch_size

    def train_step(self) -> None:
        """One batch: forward, cross-entropy, backward, optimiser step."""
        data = self.source.train_batch()
        loss = F.cross_entropy(
            self.model(torch.from_numpy(data["x"])), torch.from_numpy(data["y"]).long()
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def accuracy(self) -> float:
        """Test accuracy on the source's whole evaluation set (the model left in train mode)."""
        self.model.eval()
        correct = total = 0
        with torch.no_grad():
            for data in self.source.eval_batches(self.eval_batch_size):
                logits = self.model(torch.from_numpy(data["x"]))
                correct += int((logits.argmax(1) == torch.from_numpy(data["y"])).sum())
                total += len(data["y"])
        self.model.train()
        return correct / total
