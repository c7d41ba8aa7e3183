"""How good a link's synthetic gradients are: each one against the target that came later.

For every step whose gradient target reaches the interface hosting the SG model, the
synthetic gradient the layer *used* for that step (``scale * M(h) / B``, before BP(lambda)
weighting: `SGArithmetic.used`) is compared with the target (the receiver's input gradient
for the same activation, itself bootstrapped downstream):

    cosine      <sg, g> / (|sg| |g|) over the whole batch flattened; 1 is a perfect
                direction, 0 no information, < 0 pushes the wrong way.  0 when either is
                all zero (an untrained, zero-initialised SG model).
    norm_ratio  |sg| / |g|; 1 is the right size (a link with `sg.scale = 0.1`, the paper's RNN
                setting, reads 0.1 when perfect).  Absent when the target is all zero.
    staleness   steps between the activation and its target's arrival: the host's newest
                step when the target came, minus the target's step.

The means since the last metrics flush go into the agent's METRICS as `sg_cosine.LINK`,
`sg_norm_ratio.LINK` and `sg_staleness.LINK` (LINK is `src->dst`, as `sg_loss.LINK`).

Cost: one dot product and two norms of an activation-sized tensor per target (about 10 us
for a 256 x 256 float32 batch on this machine's CPU, against the regression step's
forward, backward and Adam update of the SG model that the same target pays for), and the
cached prediction (one activation-sized tensor per step in the SG cache).  Always on.
"""

from __future__ import annotations

import torch

from .core import Running


def compare(used: torch.Tensor, target: torch.Tensor) -> tuple[float, float | None]:
    """(cosine, norm ratio) of a synthetic gradient `used` against its `target`.

    Both are ``[B, ...]`` of one shape; computed over all elements in float64 (a batch-mean
    gradient's entries are small: float32 sums of squares lose digits).  The ratio is None
    when the target is all zero.
    """
    u = used.detach().reshape(-1).double()
    g = target.detach().reshape(-1).double()
    nu, ng = float(u.norm()), float(g.norm())
    cosine = float(u @ g) / (nu * ng) if nu > 0 and ng > 0 else 0.0
    return cosine, (nu / ng if ng > 0 else None)


class SGQuality:
    """Running means of one link's cosine, norm ratio and staleness (see the module docstring)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.running = Running()

    def add(self, used: torch.Tensor, target: torch.Tensor, staleness: int) -> None:
        cosine, ratio = compare(used, target)
        self.running.add("sg_cosine", cosine)
        if ratio is not None:
            self.running.add("sg_norm_ratio", ratio)
        self.running.add("sg_staleness", float(max(staleness, 0)))

    def take(self) -> dict[str, float]:
        """`{"sg_cosine.LINK": mean, ...}` since the last call; empty when no target came."""
        return {f"{key}.{self.label}": value for key, value in self.running.take().items()}
