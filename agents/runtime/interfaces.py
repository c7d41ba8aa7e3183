"""Decoupled neural interfaces: the DNI machinery that sits on each end of a link.

A `SenderInterface` lives with the agent that produces a link's activation; a
`ReceiverInterface` with the agent that consumes it.  Which of them hosts the
synthetic-gradient (SG) model is a link option (`sg.host`): by default the sender hosts it
and never waits; a receiver-hosted model answers each activation at once with a
synthetic-gradient message and learns from the receiver's own input gradient.
Synthetic-input models (mode `unlocked`) live with the receiver too, in `synthetic_input.py`.

`SGArithmetic` is one link's DNI arithmetic (the prediction's scale, the regression target,
BP(lambda) mixing) in one place; the interfaces here and the recurrent kind's boundary SG
(agents/kinds/recurrent.py) both use it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...protocol.plan import LinkPlan, SGOptions
from ..base import Shape
from .sg_quality import SGQuality


class SyntheticGradientModel(nn.Module):
    """Predicts dL/dh from h (and, for cDNI, a one-hot context); the last layer starts at zero.

    A context row (`context_features` > 0; RL's cDNI, docs/rl.md) is ``[B, 1 + features]``:
    column 0 a class (the action taken, one-hot over `context_classes`), the rest taken as
    they are (the env's rollout row: log-probability, advantage, return, value).

    Zero-initialising the output layer makes early synthetic gradients exactly zero, so an
    untrained SG model cannot push its sender anywhere (the paper's initialisation).
    """

    def __init__(
        self, h_shape: Shape, hidden: list[int], context_classes: int = 0, context_steps: int = 1, context_features: int = 0
    ) -> None:
        super().__init__()
        self.h_shape = tuple(h_shape)
        self.context_classes = context_classes
        self.context_features = context_features
        width = math.prod(self.h_shape)
        layers: list[nn.Module] = []
        # An agent ticking every T steps gets T labels per act (stacked): one one-hot each.
        fan_in = width + (context_classes + context_features) * context_steps
        for size in hidden:
            layers += [nn.Linear(fan_in, size), nn.ReLU()]
            fan_in = size
        out = nn.Linear(fan_in, width)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, h: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        flat = h.reshape(h.shape[0], -1)
        if self.context_classes:
            if context is None:
                raise ValueError("this SG model is conditioned (cDNI) and needs its context")
            if self.context_features:
                onehot = F.one_hot(context[:, 0].long(), self.context_classes).to(flat.dtype)
                flat = torch.cat([flat, onehot, context[:, 1:].to(flat.dtype)], 1)
            else:
                onehot = F.one_hot(context.long(), self.context_classes).to(flat.dtype)
                flat = torch.cat([flat, onehot.reshape(flat.shape[0], -1)], 1)
        return self.net(flat).reshape(h.shape)


class ConvSyntheticGradientModel(nn.Module):
    """Predicts dL/dh for a (C, H, W) activation with 'same'-padded convolutions.

    For cDNI the label enters as `context_classes` extra input planes, the label's plane all
    ones and the others zero (the paper's CNN).  `hidden` lists the channels of the hidden
    convolutions (each followed by ReLU); the last convolution maps back to C channels and
    starts at zero, so an untrained model sends exactly zero, like the dense one.
    """

    def __init__(self, h_shape: Shape, hidden: list[int], context_classes: int = 0, kernel: int = 5) -> None:
        super().__init__()
        if len(h_shape) != 3:
            raise ValueError(f"a conv SG model needs a (C, H, W) activation, got {tuple(h_shape)}")
        self.h_shape = tuple(h_shape)
        self.context_classes = context_classes
        layers: list[nn.Module] = []
        fan_in = self.h_shape[0] + context_classes
        for channels in hidden:
            layers += [nn.Conv2d(fan_in, channels, kernel, padding=kernel // 2), nn.ReLU()]
            fan_in = channels
        out = nn.Conv2d(fan_in, self.h_shape[0], kernel, padding=kernel // 2)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*layers, out)

    def forward(self, h: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.context_classes:
            if context is None:
                raise ValueError("this SG model is conditioned (cDNI) and needs its context")
            planes = F.one_hot(context.long(), self.context_classes).to(h.dtype)
            planes = planes[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
            h = torch.cat([h, planes], 1)
        return self.net(h)


def build_sg_model(sg: SGOptions, h_shape: Shape, context_classes: int, context_steps: int = 1, context_features: int = 0) -> nn.Module:
    """The SG model a link's `sg` options describe (`model`, `hidden`, `context`, `kernel`).

    `model = "conv"` builds a convolutional SG for (C, H, W) activations; on a flat activation
    it means a linear SG (so one `link_defaults` serves a net of conv then dense layers).
    """
    classes = context_classes if sg.context else 0
    features = context_features if sg.context else 0
    if features:
        hidden = list(sg.hidden) if sg.model == "mlp" else []
        return SyntheticGradientModel(h_shape, hidden, classes, 1, features)
    if sg.model == "conv":
        if len(h_shape) == 3:
            return ConvSyntheticGradientModel(h_shape, list(sg.hidden), classes, sg.kernel)
        return SyntheticGradientModel(h_shape, [], classes)
    hidden = list(sg.hidden) if sg.model == "mlp" else []
    return SyntheticGradientModel(h_shape, hidden, classes, context_steps)


@dataclass(frozen=True)
class SGArithmetic:
    """One link's DNI arithmetic: what a prediction is worth where it is used, what it
    regresses onto, and how BP(lambda) mixes it with the true gradient.

    The model works at per-example scale: the gradient of a batch-mean loss is 1/B of each
    example's own, so targets are multiplied by B before regression and predictions divided
    by B before use (`per_example`; B is the batch).  Adam's step size does not shrink with
    tiny targets, so a model fitted at batch-mean scale overshoots them by orders of
    magnitude.  `scale` is the factor on the prediction where it is used (the paper's 0.1 for
    its RNNs).  BP(lambda) (Jaderberg et al., ICML 2017 supplement): the gradient used is
    ``lam * true + (1 - lam) * synthetic``.

    Shapes: every tensor is ``[B, ...]``, the activation's shape.
    """

    scale: float = 1.0
    lam: float = 0.0
    per_example: bool = True

    def _per(self, batch: int) -> int:
        return batch if self.per_example else 1

    def used(self, prediction: torch.Tensor, batch: int) -> torch.Tensor:
        """The synthetic gradient a prediction stands for: ``scale * M(h) / B``."""
        return prediction * (self.scale / self._per(batch))

    def unit(self, prediction: torch.Tensor, batch: int) -> torch.Tensor:
        """The prediction at gradient scale with no `scale` factor: ``M(h) / B``."""
        return prediction / self._per(batch)

    def target(self, gradient: torch.Tensor, batch: int) -> torch.Tensor:
        """What the model regresses onto for a (bootstrapped) gradient target: ``B * g``."""
        return gradient * self._per(batch)

    @property
    def waits(self) -> bool:
        """The sender needs the true gradient before it updates (lambda > 0)."""
        return self.lam > 0

    def synthetic_part(self, synthetic: torch.Tensor) -> torch.Tensor | None:
        """The synthetic gradient's share of the gradient used; None when lambda is 1."""
        if self.lam == 0:
            return synthetic
        return None if self.lam >= 1 else synthetic * (1.0 - self.lam)

    def true_part(self, true: torch.Tensor) -> torch.Tensor:
        """The true gradient's share of the gradient used (lambda times it)."""
        return true if self.lam >= 1 else true * self.lam


class StepCache:
    """A bounded map from step to what a later message for that step will need.

    Bounded because a gradient target may never come (the run stops, a peer drops a
    message); the oldest entries go first and are counted so the loss is visible.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[int, tuple] = OrderedDict()
        self.evicted = 0

    def put(self, step: int, value: tuple) -> None:
        self.entries[step] = value
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
            self.evicted += 1

    def pop(self, step: int) -> tuple | None:
        return self.entries.pop(step, None)

    def __len__(self) -> int:
        return len(self.entries)


class Regressor:
    """A model with its own Adam optimiser, fitted by L2 regression, with a running loss.

    The shared machinery of the interface models: synthetic-gradient models here and
    synthetic-input models in `synthetic_input.py`.
    """

    def __init__(self, model: nn.Module, lr: float) -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.loss_sum = 0.0
        self.loss_count = 0

    def fit(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """One L2 regression step of `prediction` (computed by the model) onto `target`."""
        loss = F.mse_loss(prediction, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.item()
        self.loss_count += 1

    def take_loss(self) -> float | None:
        """The mean regression loss since the last call, or None if there was no step."""
        if not self.loss_count:
            return None
        mean = self.loss_sum / self.loss_count
        self.loss_sum, self.loss_count = 0.0, 0
        return mean

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load(self, state: dict) -> None:
        """Restore what `state()` returned (a checkpoint)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class HostedSG(Regressor):
    """An SG model with its optimiser, its regression step and its running loss."""

    def __init__(
        self, sg: SGOptions, h_shape: Shape, context_classes: int, lr: float, context_steps: int = 1, context_features: int = 0
    ) -> None:
        super().__init__(build_sg_model(sg, h_shape, context_classes, context_steps, context_features), sg.lr or lr)
        self.math = SGArithmetic(float(sg.scale), float(sg.lam))

    def predict(self, h: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """The synthetic gradient for `h` (the model's output, scaled for use; no graph)."""
        with torch.no_grad():
            return self.math.used(self.model(h, context), h.shape[0])

    def learn(self, h: torch.Tensor, context: torch.Tensor | None, target: torch.Tensor) -> None:
        # Regress onto the gradient target: L2, as in the paper.  The target is itself
        # bootstrapped (computed downstream with that agent's own synthetic gradient).
        self.fit(self.model(h, context), self.math.target(target, h.shape[0]))


class SenderInterface:
    """The sender's end of a link: decides whether it waits, and hosts its SG model in `dni`.

    BP(lambda) (`sg.lam`, or the link option `lambda`): the gradient the sender uses is
    `lam * true + (1 - lam) * synthetic`.  With `lam > 0` the sender needs the true gradient,
    so it waits for it exactly as on a `backprop` link (update-locked); `lam = 1` is backprop
    (the SG model still learns from the targets), `lam = 0` is plain DNI.
    """

    def __init__(self, link: LinkPlan, h_shape: Shape, context_classes: int, lr: float, context_features: int = 0) -> None:
        self.link = link
        self.mode = link.mode
        self.hosted: HostedSG | None = None
        self.cache: StepCache | None = None
        sg = link.sg
        if self.mode.has_sg_model and sg.sender_hosted:
            # Labels reach the sender stacked by its tick (they come from the source, tick 1).
            self.hosted = HostedSG(sg, h_shape, context_classes, lr, link.src_tick, context_features)
            self.cache = StepCache(sg.cache)
        self.needs_context = bool(self.hosted and sg.context)
        self.lam = float(sg.lam) if self.hosted is not None else 0.0
        self.quality = SGQuality(link.label) if self.hosted is not None else None

    @property
    def waits(self) -> bool:
        """True when the sender must wait for a gradient message before it can update."""
        if self.mode.locked:
            return True
        return self.mode.has_sg_model and (self.hosted is None or self.hosted.math.waits)

    @property
    def expects_target(self) -> bool:
        """True when the receiver sends gradient targets back on this link."""
        return self.mode.locked or self.hosted is not None

    def synthetic_gradient(
        self, step: int, h: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The synthetic part of the gradient for `h` now (BP(lambda)-weighted; None when
        lambda is 1), and remember `h` (and the prediction, for `quality`) until its target
        arrives."""
        assert self.hosted is not None and self.cache is not None
        used = self.hosted.predict(h, context)
        self.cache.put(step, (h, context, used))
        return self.hosted.math.synthetic_part(used)

    def true_part(self, true: torch.Tensor) -> torch.Tensor:
        """BP(lambda): the true gradient's share of the gradient used."""
        return self.hosted.math.true_part(true) if self.hosted is not None else true

    def on_target(self, step: int, target: torch.Tensor, clock: int | None = None) -> str | None:
        """Train the SG model on a late gradient target, and score the synthetic gradient
        used for that step against it (`quality`; `clock`: the sender's newest step now,
        for the target's staleness; None counts it as fresh).

        Returns None when it trained, else the reject reason: "step" when the step is not in
        the cache (forgotten, or never sent), "shape" when the target is not shaped like the
        activation it claims to be for (the entry stays, for the real target).
        """
        assert self.hosted is not None and self.cache is not None
        entry = self.cache.entries.get(step)
        if entry is None:
            return "step"
        h, context, used = entry
        if target.shape != h.shape:
            return "shape"
        self.cache.pop(step)
        self.quality.add(used, target, 0 if clock is None else clock - step)
        self.hosted.learn(h, context, target)
        return None


class ReceiverInterface:
    """The receiver's end of a link: sends gradients back, or answers with a hosted SG model."""

    def __init__(self, link: LinkPlan, h_shape: Shape, context_classes: int, lr: float, context_features: int = 0) -> None:
        self.link = link
        self.mode = link.mode
        self.hosted: HostedSG | None = None
        sg = link.sg
        self.answered: StepCache | None = None  # step -> the SG sent back, for `quality`
        self.quality: SGQuality | None = None
        if self.mode.has_sg_model and not sg.sender_hosted:
            self.hosted = HostedSG(sg, h_shape, context_classes, lr, link.dst_tick, context_features)
            self.answered = StepCache(sg.cache)
            self.quality = SGQuality(link.label)
        self.needs_context = bool(self.hosted and sg.context)

    @property
    def returns_gradient(self) -> bool:
        """True when this end sends its input gradient back as a gradient target."""
        return self.mode.carries_gradient and self.hosted is None

    def answer(self, h: torch.Tensor, context: torch.Tensor | None, step: int = -1) -> torch.Tensor:
        """The synthetic gradient sent back the moment the activation of `step` arrives."""
        assert self.hosted is not None and self.answered is not None
        used = self.hosted.predict(h, context)
        self.answered.put(step, (used,))
        return used

    def learn(self, step: int, h: torch.Tensor, context: torch.Tensor | None, target: torch.Tensor, clock: int) -> None:
        """Fit the hosted model on this end's own input gradient for `step`, scoring the
        answer sent for that step first (`clock`: the receiver's newest step now)."""
        assert self.hosted is not None and self.answered is not None
        entry = self.answered.pop(step)
        if entry is not None and entry[0].shape == target.shape:
            self.quality.add(entry[0], target, clock - step)
        self.hosted.learn(h, context, target)
