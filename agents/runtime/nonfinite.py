"""Non-finite numbers caught where they arise: at the agent, with its name, step and quantity.

A layer whose learning rate is far too high trains to NaN; a NaN loss, gradient or synthetic
gradient then crosses every link and the run "finishes" at chance.  `NonFiniteGuard` checks
the quantities an agent computes or receives before it uses them, and `run.on_nonfinite`
says what follows:

    stop   (default) raise `NonFiniteError`: the agent reports it, the run ends with exit 1
           and summary.json names agent, step and quantity
    warn   log it (rate-limited), count it (`nonfinite.QUANTITY` in the metrics) and use it
    skip   log and count it, and use zeros instead for this step (a non-finite loss adds no
           gradient), so that nothing non-finite reaches a parameter or a peer

Quantities: `loss` (a terminal's task loss), `activation` (a module's output),
`synthetic_gradient` (an SG model's output, at either end of a link), `gradient` (the
gradient of an input about to go upstream).  A NaN or inf that arrives from a peer is not
this guard's: under "stop" and "skip" no agent of the run sends one, so the receiving agent
refuses it as a message (reason `nonfinite`, agents/runtime/admission.py) and lives on; a
well-formed message cannot stop an agent.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ...protocol.plan import NONFINITE_POLICIES

QUANTITIES = ("loss", "activation", "synthetic_gradient", "gradient")

log = logging.getLogger("synthgrad.agent")


class NonFiniteError(RuntimeError):
    """A non-finite value under `run.on_nonfinite = "stop"`; the message names agent, step,
    quantity and where (a port or a link), and the option that would let the run go on."""

    def __init__(self, agent: str, step: int, quantity: str, where: str) -> None:
        self.agent, self.step, self.quantity, self.where = agent, step, quantity, where
        super().__init__(
            f"agent {agent!r}, step {step}: the {quantity.replace('_', ' ')} ({where}) is not finite (NaN or inf); "
            "run.on_nonfinite = 'stop' ends the run here ('warn' or 'skip' train on; a smaller run.lr often avoids it)"
        )


class NonFiniteGuard:
    """Checks tensors for NaN and inf and applies one policy (module docstring).

    Attributes:
        counts: non-finite values seen, by quantity (reported as `nonfinite.QUANTITY`).
    """

    def __init__(self, agent: str, policy: str, first: int = 5) -> None:
        if policy not in NONFINITE_POLICIES:
            raise ValueError(f"run.on_nonfinite must be one of {list(NONFINITE_POLICIES)}, got {policy!r}")
        self.agent, self.policy, self.first = agent, policy, first
        self.counts: dict[str, int] = {}

    def check(self, tensor: torch.Tensor, step: int, quantity: str, where: str) -> torch.Tensor:
        """`tensor` itself when finite or under "warn"; zeros like it under "skip".

        Raises:
            NonFiniteError: under "stop", when any element is NaN or inf.
        """
        if _finite(tensor):
            return tensor
        if self.policy == "stop":
            raise NonFiniteError(self.agent, step, quantity, where)
        count = self.counts[quantity] = self.counts.get(quantity, 0) + 1
        if count <= self.first or count % 1000 == 0:
            action = "using it anyway" if self.policy == "warn" else "using zeros instead"
            log.warning("%s: step %d: non-finite %s (%s), %s (run.on_nonfinite = %r; seen %d)",
                        self.agent, step, quantity, where, action, self.policy, count)
        return tensor if self.policy == "warn" else torch.zeros_like(tensor)

    def metrics(self) -> dict[str, int]:
        return {f"nonfinite.{quantity}": n for quantity, n in sorted(self.counts.items())}


SMALL = 4096  # elements: below this numpy's check costs a few microseconds, torch's two ops ~25


def _finite(tensor: torch.Tensor) -> bool:
    """Every element finite.  Small CPU float tensors (RL's acting steps: a few rows) are
    checked through numpy, which skips torch's per-op dispatch."""
    if tensor.numel() <= SMALL and tensor.device.type == "cpu" and tensor.dtype in (torch.float32, torch.float64):
        return bool(np.isfinite(tensor.detach().numpy()).all())
    return bool(torch.isfinite(tensor).all())
