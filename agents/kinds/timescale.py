"""The paper's two-timescale system: a stream of digits, a fast counter A and a slow counter B.

Data (`digit_stream`, a source): every row of a batch is an endless stream of episodes of
`length` digits, one digit per step, all rows starting their episodes together at multiples
of `length`.  Ports, per step:

    port    shape    meaning
    x       [D + 1]  the digit's image (flattened), then the episode-reset flag (1 on an
                     episode's first digit)
    odd     []       int64: odd digits seen so far in the episode, this one included (A's task)
    threes  []       int64: 3s seen so far in the episode, this one included (B's task)
    reset   []       float: the reset flag alone (B has no image to read it from)
    digit   []       int64: the digit's class, the label port (cDNI conditions SG models on it)

Agent A (`fast_counter`): a 2-layer FCN (Linear, BN, ReLU) under an LSTM whose readout
classifies the odd count (classes 0 .. `classes` - 1) at every step; it also emits a message
(Linear + BN of the LSTM's output) at every step.  Run with `tick_every = T`, it receives T
steps at once (the runtime stacks them) and trains by truncated BPTT over those T steps, the
state carried across blocks and detached at their edge: A updates once per T digits.

Agent B (`slow_counter`): an LSTM that takes one step per `unroll`-th of its block, reading
the messages of that part flattened together, and classifies the count of 3s at the end of
each such part.  With A at tick T and B at tick T * `unroll` (T = `unroll` = 4: A's tick 4,
B's tick 16) B ticks once every T of A's steps, as in the paper, and its truncated BPTT spans
`unroll` of its own ticks, i.e. T^2 digits.

The LSTM and its readout are `RecurrentCore` of the `rnn` kind (agents/kinds/recurrent.py); what
decouples A from B is the link between them (`dni`, `backprop`, `none`).  Accuracy is the
share of (row, step) predictions that are right, over held-out test digits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...environments.datasets import IMAGE_SETS, TEST_SIZES, load_dataset
from ...environments.sequence_tasks import EVAL_SEED
from ..base import Agent, Shape, Source
from ..errors import ParamError
from .modules import build_module
from .recurrent import RecurrentCore


def _counts(labels: np.ndarray, start: np.ndarray, state: tuple[np.ndarray, np.ndarray]):
    """Running (odd, threes) counts after one step's labels; rows with `start` begin at zero."""
    odd, threes = (np.where(start, 0, s) for s in state)
    return odd + (labels % 2 == 1), threes + (labels == 3)


class DigitStream(Source):
    """Episodes of MNIST digits with running counts (see the module docstring).

    Parameters: `dataset`, `length` (digits per episode), `eval_steps` (digits per row in one
    evaluation: the evaluation is `eval_batch_size` rows of distinct test digits).
    """

    kind = "digit_stream"
    outputs = ("x", "odd", "threes", "reset", "digit")
    label_port = "digit"
    defaults = {"dataset": "mnist", "length": 16, "eval_steps": 32}

    def __init__(self, name: str, params: dict) -> None:
        super().__init__(name, params)
        p = self.params
        if p["dataset"] not in TEST_SIZES:
            raise ParamError(
                "dataset", f"unknown dataset {p['dataset']!r}; known: {sorted(TEST_SIZES)}"
            )
        for key in ("length", "eval_steps"):
            if isinstance(p[key], bool) or not isinstance(p[key], int) or p[key] < 1:
                raise ParamError(key, f"must be a positive integer, got {p[key]!r}")
        self.episode_length = int(p["length"])
        self.pixels = math.prod(IMAGE_SETS[p["dataset"]][0])
        self.rng: np.random.Generator | None = None
        self.train = None
        self.t = 0
        self.state = (np.zeros(0, np.int64), np.zeros(0, np.int64))

    def output_shapes(self):
        return {"x": (self.pixels + 1,), "odd": (), "threes": (), "reset": (), "digit": ()}

    @property
    def num_classes(self) -> int:
        return IMAGE_SETS[self.params["dataset"]][1]  # of the label port, `digit`

    def steps_per_epoch(self, batch_size: int) -> int:
        return 60_000 // batch_size  # nominal: digits are drawn with replacement (use run.steps)

    def eval_steps(self, batch_size: int) -> int:
        """Steps one evaluation takes; refuses more than the test set's distinct digits."""
        steps = int(self.params["eval_steps"])
        have = TEST_SIZES[self.params["dataset"]]
        if steps * batch_size > have:
            raise ParamError(
                "eval_steps",
                f"{steps} steps of run.eval_batch_size = {batch_size} rows need {steps * batch_size} test digits; {self.params['dataset']} has {have}",
            )
        return steps

    def open(self, batch_size: int, seed: int) -> None:
        self.train = load_dataset(self.params["dataset"], "train")
        self.rng = np.random.default_rng([seed, 1])
        self.t = 0
        self.state = (np.zeros(batch_size, np.int64), np.zeros(batch_size, np.int64))

    def _step(self, images, labels, t, state):
        start = np.full(len(labels), t % self.episode_length == 0)
        state = _counts(labels, start, state)
        flat = images.reshape(len(labels), -1)
        x = np.concatenate([flat, start[:, None].astype(np.float32)], 1)
        batch = {
            "x": x,
            "odd": state[0].copy(),
            "threes": state[1].copy(),
            "reset": start.astype(np.float32),
            "digit": labels.astype(np.int64),
        }
        return batch, state

    def train_batch(self):
        assert self.train is not None, "open() first"
        idx = self.rng.integers(0, len(self.train), len(self.state[0]))
        batch, self.state = self._step(
            self.train.images[idx], self.train.labels[idx], self.t, self.state
        )
        self.t += 1
        return batch

    def eval_batches(self, batch_size: int):
        test = load_dataset(self.params["dataset"], "test")
        steps = self.eval_steps(batch_size)
        order = (
            np.random.default_rng(EVAL_SEED)
            .permutation(len(test))[: steps * batch_size]
            .reshape(batch_size, steps)
        )
        state = (np.zeros(batch_size, np.int64), np.zeros(batch_size, np.int64))
        for t in range(steps):
            batch, state = self._step(test.images[order[:, t]], test.labels[order[:, t]], t, state)
            yield batch


def _steps_first(x: torch.Tensor, per_step: int) -> torch.Tensor:
    """``[B, ...]`` as ``[B, T, per_step]`` (a lone step gets T = 1)."""
    return x.reshape(x.shape[0], -1, per_step)


def _count_loss(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, float]:
    classes = logits.shape[-1]
    if int(target.max()) >= classes:
        raise ValueError(
            f"a count of {int(target.max())} needs more than classes = {classes}; give classes >= length + 1"
        )
    loss = F.cross_entropy(logits.reshape(-1, classes), target.reshape(-1).long())
    return loss, float((logits.detach().argmax(-1) == target).float().mean())


def _count_sums(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    classes = logits.shape[-1]
    target = target.long().clamp(max=classes - 1)
    return {
        "correct": float((logits.argmax(-1) == target).sum()),
        "total": float(target.numel()),
        "loss_sum": float(
            F.cross_entropy(logits.reshape(-1, classes), target.reshape(-1), reduction="sum")
        ),
    }


class _Counter(Agent):
    """What A and B share: an LSTM state carried across blocks, one for training, one for evaluation."""

    def _state(self, batch: int, units: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = "train_state" if self.module.training else "eval_state"
        state = getattr(self, key, None)
        if state is None or state[0].shape[0] != batch:
            state = (torch.zeros(batch, units), torch.zeros(batch, units))
        return state

    def _keep(self, h: torch.Tensor, c: torch.Tensor) -> None:
        # Detached at the block's edge: truncated BPTT over one block.
        setattr(
            self, "train_state" if self.module.training else "eval_state", (h.detach(), c.detach())
        )


class FastCounter(_Counter):
    """Agent A: FCN -> LSTM -> odd-count readout, and a message per step (see the module docstring).

    Port `x` (from `digit_stream`, stacked ``[B, T, D + 1]`` at tick T); context `odd`;
    outputs `message` ``[T, message]`` (``[message]`` at tick 1) and `logits`.
    """

    kind = "fast_counter"
    inputs = ("x",)
    outputs = ("message", "logits")
    context_inputs = ("odd",)
    terminal = True
    defaults = {"fcn": 256, "hidden": 256, "message": 32, "classes": 17, "lr": None}

    def build(self, in_shapes: dict[str, Shape]):
        shape = tuple(in_shapes["x"])
        steps, pixels = (1, shape[0] - 1) if len(shape) == 1 else (shape[0], shape[1] - 1)
        p = {k: int(self.params[k]) for k in ("fcn", "hidden", "message", "classes")}
        module = nn.Module()
        module.fcn = nn.Sequential(
            build_module("dense", {"width": p["fcn"]}, (pixels,))[0],
            build_module("dense", {"width": p["fcn"]}, (p["fcn"],))[0],
        )
        module.core = RecurrentCore(p["fcn"], p["hidden"], p["classes"], sg=False, aux=False)
        module.message = nn.Sequential(
            nn.Linear(p["hidden"], p["message"], bias=False), nn.BatchNorm1d(p["message"])
        )
        self.module = module
        lead = (steps,) if len(shape) > 1 else ()
        return module, {"message": (*lead, p["message"]), "logits": (*lead, p["classes"])}

    def forward(self, inputs):
        x = inputs["x"]
        batch, lead = x.shape[0], x.shape[1:-1]
        x = _steps_first(x, x.shape[-1])
        steps = x.shape[1]
        m = self.module
        features = m.fcn(x[..., :-1].reshape(batch * steps, -1)).reshape(batch, steps, -1)
        reset = (x[..., -1] > 0.5).to(x.dtype)
        hs, h, c = m.core.run(features, reset, *self._state(batch, m.core.units))
        self._keep(h, c)
        message = m.message(hs.reshape(batch * steps, -1)).reshape(batch, *lead, -1)
        return {"message": message, "logits": m.core.readout(hs).reshape(batch, *lead, -1)}

    def loss(self, outputs, context):
        loss, accuracy = _count_loss(outputs["logits"], context["odd"])
        return loss, {"accuracy": accuracy}

    def evaluate(self, outputs, context):
        return _count_sums(outputs["logits"], context["odd"])


class SlowCounter(_Counter):
    """Agent B: an LSTM over A's messages, `unroll` steps per act, counting 3s (module docstring).

    Ports `message` (A's messages of the block, stacked) and `reset` (the source's flags of
    the block); context `threes`; output `logits` ``[unroll, classes]``.
    """

    kind = "slow_counter"
    inputs = ("message", "reset")
    outputs = ("logits",)
    context_inputs = ("threes",)
    terminal = True
    defaults = {"hidden": 256, "unroll": 4, "classes": 17, "lr": None}

    def build(self, in_shapes: dict[str, Shape]):
        unroll = int(self.params["unroll"])
        size, flags = math.prod(in_shapes["message"]), math.prod(in_shapes["reset"])
        if unroll < 1 or size % unroll or flags % unroll:
            raise ParamError(
                "unroll",
                f"must divide the block: {flags} steps and {size} message values per act do not split into {unroll} parts",
            )
        self.unroll = unroll
        self.module = RecurrentCore(
            size // unroll,
            int(self.params["hidden"]),
            int(self.params["classes"]),
            sg=False,
            aux=False,
        )
        return self.module, {"logits": (unroll, int(self.params["classes"]))}

    def forward(self, inputs):
        batch = inputs["message"].shape[0]
        messages = _steps_first(
            inputs["message"], math.prod(inputs["message"].shape[1:]) // self.unroll
        )
        # Episodes line up with A's messages (planning checks it), so a part's first flag is its reset.
        flags = (inputs["reset"] > 0.5).to(messages.dtype)
        reset = _steps_first(flags, flags[0].numel() // self.unroll)[..., 0]
        core = self.module
        hs, h, c = core.run(messages, reset, *self._state(batch, core.units))
        self._keep(h, c)
        # The flags join the graph with weight 0, so their (zero) gradient is defined.
        return {"logits": core.readout(hs) + 0.0 * inputs["reset"].sum()}

    def _targets(self, threes: torch.Tensor) -> torch.Tensor:
        """The count at the end of each of the block's parts."""
        return _steps_first(threes, threes[0].numel() // self.unroll)[..., -1]

    def loss(self, outputs, context):
        loss, accuracy = _count_loss(outputs["logits"], self._targets(context["threes"]))
        return loss, {"accuracy": accuracy}

    def evaluate(self, outputs, context):
        return _count_sums(outputs["logits"], self._targets(context["threes"]))
