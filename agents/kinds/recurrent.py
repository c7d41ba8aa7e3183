"""The `rnn` kind: an LSTM trained by truncated BPTT, with a synthetic gradient at each window edge.

One agent is the recurrent core, its readout and its own loss (terminal). Each runtime step
brings one window of ``T`` time steps (agents/kinds/sequence_source.py): the core runs the window
from the state the previous window left (detached at the boundary, so gradients stop there:
truncated BPTT), resets the rows whose episode starts, and the task loss is backpropagated by
the runtime as for any head. The recurrence stays inside one process; what DNI decouples here
is *time*: window k's update does not wait for the gradient that window k+1 will send back to
its last state.

Synthetic gradient (`sg = true`, the paper's RNN method). A model M reads the last state
``s_T = [h_T, c_T]`` and predicts dL_future/ds_T; the window's backward adds
``sg_scale * M(s_T)`` as the gradient at ``s_T``. The regression target of ``M(s_T)`` is the
gradient that reaches the *next* window's initial state (which is ``s_T``, detached and made a
leaf) in that window's backward; that backward already includes the next window's own
synthetic gradient, so the target is bootstrapped like a TD target (and the 0.1 scale, being
inside it, acts as a per-window discount). The target only exists after the runtime has run
window k+1's backward, so M regresses onto it in window k+2's loss: a one-window lag, the
same delay a target arriving from another process would have.

Options:
    hidden: LSTM units (the SG model has one hidden layer of the same width, its last layer
        zero at init so the first windows are exactly truncated BPTT).
    sg: false is plain truncated BPTT (the future gradient is zero, no SG model exists).
    sg_scale: the factor on the synthetic gradient where it is used (0.1 in the paper).
    sg_bootstrap: the factor on the next window's synthetic gradient inside the bootstrapped
        target (a per-window discount). Empty (the default) means `sg_scale`: the target is
        exactly the gradient the next window's backward left. Any other value (e.g. 1.0: M
        predicts the undiscounted future gradient while the core still receives
        ``sg_scale * M``) costs one extra backward through the window's state path to
        separate the synthetic part of that gradient.
    sg_per_example: regress M at per-example scale (targets times B, predictions divided by
        B, as `HostedSG`); false regresses onto the batch-mean gradient as it is.
    aux: DNI + Aux. Our reading of "the core also predicts the synthetic gradient T steps
        ahead": a linear head on every step's ``h_t`` of a window regresses onto the
        synthetic gradient at the window's end (detached, per-example scale), i.e. the SG up
        to T steps ahead (exactly T for the window's first step). It is an auxiliary loss
        that shapes the core; its gradient is part of the core's objective, so it is also
        part of the gradient the SG model learns to predict.
    sg_to_core: let the SG regression loss reach the core. With the lag above the target's
        window is gone from memory, so the core re-runs that window from its cached input
        and initial state (the paper's "one extra recurrent core in memory") and the
        regression loss flows through the recomputed ``s_T`` into the core's weights.
    objective: `bits` (sigmoid bits, masked: Copy tasks) or `chars` (softmax over one-hot
        characters: text).
    task: "" reads the data from port `x`; `copy` / `repeat_copy` makes the agent generate
        its own stream and run the paper's curriculum on the errors it measures, because the
        curriculum needs those errors and no message path leads back to the source. Port `x`
        then only clocks the steps (its shape gives T; its content is ignored) and
        evaluation uses held-out episodes at the current level.

Evaluation sums (reported by the runtime as `test_loss = loss_sum / total`,
`test_accuracy = correct / total`): for `bits`, `total` counts finished episodes,
`loss_sum` their bit errors (so test_loss is the paper's bits per sequence error) and
`correct` the episodes copied without error; for `chars`, `total` counts characters,
`loss_sum` their negative log-likelihood in bits (test_loss is bits per character) and
`correct` the characters predicted by the arg-max.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...environments.sequence_tasks import (
    EVAL_SEED,
    Curriculum,
    EpisodeStream,
    bit_errors,
    make_task,
    with_reset,
)
from ..base import Agent, Shape
from ..errors import ParamError
from ..runtime.interfaces import SGArithmetic, SyntheticGradientModel


class RecurrentCore(nn.Module):
    """LSTM cell, linear readout, and the optional SG model and aux head (all trained together)."""

    def __init__(self, in_size: int, units: int, out_size: int, sg: bool, aux: bool) -> None:
        super().__init__()
        self.units = units
        self.cell = nn.LSTMCell(in_size, units)
        self.readout = nn.Linear(units, out_size)
        self.sg = SyntheticGradientModel((2 * units,), [units]) if sg else None
        self.aux = nn.Linear(units, 2 * units) if (sg and aux) else None

    def run(self, x: torch.Tensor, reset: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        """Run ``x [B, T, C]`` from ``(h, c)``; rows with ``reset[:, t]`` start from zero at t.

        Returns every step's ``h [B, T, units]`` and the last ``(h, c)``.
        """
        hs = []
        for t in range(x.shape[1]):
            keep = (1.0 - reset[:, t]).unsqueeze(1)
            # Multiplying (not overwriting) keeps the graph: a reset row's earlier state
            # simply gets zero gradient, which is the true gradient.
            h, c = self.cell(x[:, t], (h * keep, c * keep))
            hs.append(h)
        return torch.stack(hs, 1), h, c


class RNN(Agent):
    """An LSTM over windows with truncated BPTT and an optional synthetic gradient at the edge.

    Port `x`: ``[B, T, C + 1]`` (input channels then the episode-reset flag); context `y`,
    `mask` as agents/kinds/sequence_source.py sends them; output `logits` ``[B, T, out]``.
    See the module docstring for the options and metrics.
    """

    kind = "rnn"
    inputs = ("x",)
    outputs = ("logits",)
    context_inputs = ("y", "mask")
    terminal = True
    defaults = {
        "hidden": 64, "lr": None, "sg": True, "sg_scale": 0.1, "sg_bootstrap": None,
        "sg_per_example": True, "aux": False, "sg_to_core": False,
        "objective": "bits", "task": "", "width": 8, "length": 1, "repeats": 1,
        "curriculum": True, "threshold": 0.15, "curriculum_sequences": 256, "data_seed": 0,
    }

    def __init__(self, name: str, params: dict) -> None:
        super().__init__(name, params)
        if self.params["objective"] not in ("bits", "chars"):
            raise ParamError("objective", f"must be 'bits' or 'chars', got {self.params['objective']!r}")
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.eval_state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.window: dict | None = None  # this training window, for loss()
        self.prev: dict | None = None  # the previous window: its initial-state leaves hold the target
        self.prev2: dict | None = None  # the one before (sg_to_core recomputes it)
        self.windows = 0  # training windows seen
        self.sg_losses: list[float] = []
        self.errors = [0.0, 0.0]  # bit errors, episodes since the last loss() report
        self.own = None  # self-generated task stream (task = copy / repeat_copy)
        self._eval = None
        self._eval_data, self._eval_reset = None, None
        self._fit = float("nan")

    # ----------------------------------------------------------------- build
    def build(self, in_shapes: dict[str, Shape]):
        T, channels = in_shapes["x"]
        data = channels - 1  # the last channel is the reset flag
        out = data - 1 if self.params["objective"] == "bits" else data
        if self.params["task"]:
            p = self.params
            task = make_task(p["task"], int(p["width"]), int(p["length"]), int(p["repeats"]))
            if task.input_size != data:
                raise ValueError(f"task {p['task']!r} of width {p['width']} has {task.input_size} input channels, port x brings {data}")
            self.own = {"task": task, "stream": None, "curriculum": None, "T": T}
        self.module = RecurrentCore(data, int(self.params["hidden"]), out, bool(self.params["sg"]), bool(self.params["aux"]))
        return self.module, {"logits": (T, out)}

    # ----------------------------------------------------------------- data
    def _own_window(self, batch: int) -> dict[str, torch.Tensor]:
        own = self.own
        if own["stream"] is None or own["stream"].batch_size != batch:
            own["stream"] = EpisodeStream(own["task"], batch, int(self.params["data_seed"]))
            if self.params["curriculum"]:
                own["curriculum"] = Curriculum(own["task"], float(self.params["threshold"]), int(self.params["curriculum_sequences"]))
        inputs, targets, mask, reset = own["stream"].next_window(own["T"])
        return {"x": torch.from_numpy(with_reset(inputs, reset)), "y": torch.from_numpy(targets), "mask": torch.from_numpy(mask)}

    def _own_eval_window(self, batch: int) -> dict[str, torch.Tensor]:
        # A new evaluation round (training went on since the last one): fresh held-out episodes
        # at the current level, every row starting an episode at step 0.
        if self._eval is None or self._eval["at"] != self.windows or self._eval["stream"].batch_size != batch:
            task = make_task(self.params["task"], int(self.params["width"]), *self.own["task"].level)
            self._eval = {"at": self.windows, "stream": EpisodeStream(task, batch, EVAL_SEED, desync=False)}
        inputs, targets, mask, reset = self._eval["stream"].next_window(self.own["T"])
        return {"x": torch.from_numpy(with_reset(inputs, reset)), "y": torch.from_numpy(targets), "mask": torch.from_numpy(mask)}

    @staticmethod
    def _zeros(batch: int, units: int):
        return torch.zeros(batch, units), torch.zeros(batch, units)

    # ----------------------------------------------------------------- forward
    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run one window from the carried state; keep what loss() and the next window need."""
        core = self.module
        x = inputs["x"]
        batch = x.shape[0]
        data = None
        if self.own is not None:
            data = self._own_window(batch) if core.training else self._own_eval_window(batch)
            # The clock's tensor joins the graph with weight 0 so its (zero) gradient is defined.
            x = data["x"] + 0.0 * x
        seq, reset = x[..., :-1], (x[..., -1] > 0.5).to(x.dtype)
        if not core.training:
            state = self.eval_state
            if state is None or state[0].shape[0] != batch:
                state = self._zeros(batch, core.units)
            hs, h, c = core.run(seq, reset, *state)
            self.eval_state = (h.detach(), c.detach())
            self._eval_data, self._eval_reset = data, reset > 0.5
            return {"logits": core.readout(hs)}
        state = self.state
        if state is None or state[0].shape[0] != batch:
            state = self._zeros(batch, core.units)
        # The initial state is a leaf: the runtime's backward leaves dL/ds_0 in its .grad,
        # the bootstrapped target for the previous window's synthetic gradient.
        h0, c0 = (s.detach().requires_grad_(core.sg is not None) for s in state)
        hs, h, c = core.run(seq, reset, h0, c0)
        self.state = (h.detach(), c.detach())
        self.prev2, self.prev = self.prev, self.window
        self.window = {"h0": h0, "c0": c0, "seq": seq.detach(), "reset": reset, "h": h, "c": c, "hs": hs, "data": data}
        self.windows += 1
        return {"logits": core.readout(hs)}

    # ----------------------------------------------------------------- losses
    def _task_loss(self, logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Per-row window sum, batch mean (each row's future loss is a sum over its windows),
        and the number of steps that counted."""
        batch = logits.shape[0]
        if self.params["objective"] == "bits":
            per = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none").sum(-1)
        else:
            y = y.long().reshape(batch, -1).expand(batch, logits.shape[1])  # a [B] label applies to every step
            per = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
        mask = mask.to(logits.dtype).reshape(batch, -1).expand_as(per) if mask is not None else torch.ones_like(per)
        return (per * mask).sum() / batch, float(mask.sum())

    def _context(self, context: dict, data: dict | None):
        if data is not None:
            return data["y"], data["mask"]
        return context["y"], context.get("mask")

    def loss(self, outputs, context):
        """Task loss, plus the synthetic gradient at the window's end and the SG/aux regressions.

        The extra terms are written ``t - t.detach()`` where they only inject a gradient, so the
        reported loss is the task loss alone.
        """
        core, w = self.module, self.window
        logits = outputs["logits"]
        batch = logits.shape[0]
        y, mask = self._context(context, w["data"] if w else None)
        task, counted = self._task_loss(logits, y, mask)
        total = task
        metrics: dict[str, float] = {}
        if core.sg is not None and w is not None:
            s_T = torch.cat([w["h"], w["c"]], 1)
            # The link's DNI arithmetic (agents/runtime/interfaces.py `SGArithmetic`): the model
            # works at per-example scale, its prediction is worth sg_scale * M / B where used.
            sg_math = self._sg_math()
            pred_T = core.sg(s_T.detach()).detach()
            inject = (s_T * sg_math.used(pred_T, batch)).sum()
            total = total + inject - inject.detach()
            if self._bootstrap_shift() != 0.0 and pred_T.abs().sum() > 0:
                # The part of this window's initial-state gradient that the injected SG will
                # cause, per unit of scale: _sg_regression re-weights it in the target.
                w["sg_part"] = torch.autograd.grad(s_T, [w["h0"], w["c0"]], sg_math.unit(pred_T, batch), retain_graph=True)
            if core.aux is not None:
                target = pred_T.unsqueeze(1).expand(-1, w["hs"].shape[1], -1)
                aux = F.mse_loss(core.aux(w["hs"]), target)
                total = total + aux - aux.detach()
                metrics["aux_loss"] = aux.item()
            sg_loss = self._sg_regression(batch)
            if sg_loss is not None:
                total = total + sg_loss - sg_loss.detach()  # trains M, keeps the reported loss clean
                metrics["sg_loss"] = sg_loss.item()
                if self._fit == self._fit:  # not nan: the target had energy
                    metrics["sg_fit"] = self._fit
        if self.params["objective"] == "bits":
            metrics.update(self._bit_metrics(logits, y, mask, w))
        else:
            metrics["bpc"] = task.item() * batch / max(counted, 1.0) / math.log(2.0)
        return total, metrics

    def _sg_math(self) -> SGArithmetic:
        return SGArithmetic(float(self.params["sg_scale"]), per_example=bool(self.params["sg_per_example"]))

    def _bootstrap_shift(self) -> float:
        """sg_bootstrap - sg_scale: how much of the next SG the target adds beyond what was injected."""
        boot = self.params["sg_bootstrap"]
        return 0.0 if boot in (None, "") else float(boot) - float(self.params["sg_scale"])

    def _sg_regression(self, batch: int) -> torch.Tensor | None:
        """L2 of M(s) onto the gradient the last window's backward left at its initial state s."""
        prev = self.prev
        if prev is None or prev["h0"].grad is None:
            return None
        target = torch.cat([prev["h0"].grad, prev["c0"].grad], 1)
        if "sg_part" in prev:  # swap the injected scale for the bootstrap factor
            target = target + self._bootstrap_shift() * torch.cat(prev["sg_part"], 1)
        target = self._sg_math().target(target, batch)
        s = torch.cat([prev["h0"], prev["c0"]], 1).detach()
        if self.params["sg_to_core"] and self.prev2 is not None:
            p2 = self.prev2  # re-run the window that produced s, so the loss reaches the core
            _, h, c = self.module.run(p2["seq"], p2["reset"], p2["h0"].detach(), p2["c0"].detach())
            s = torch.cat([h, c], 1)
        loss = F.mse_loss(self.module.sg(s), target)
        energy = float(target.pow(2).mean())
        self._fit = loss.item() / energy if energy > 0 else float("nan")  # 1.0: explains nothing
        return loss

    def _bit_metrics(self, logits, y, mask, w) -> dict[str, float]:
        if y.dim() < 3:  # not bit targets (e.g. the conformance check's labels)
            return {}
        errors = bit_errors(logits.detach().numpy(), y.numpy(), mask.numpy())
        started = float(w["reset"].sum()) if w is not None else float(len(errors))
        own = self.own
        if own is not None and own["curriculum"] is not None:
            own["curriculum"].observe(float(errors.sum()), sequences=started)
        # Bits per sequence over the recent windows (a window rarely holds a whole episode).
        self.errors = [0.98 * self.errors[0] + float(errors.sum()), 0.98 * self.errors[1] + started]
        out = {"bits_per_seq": self.errors[0] / max(self.errors[1], 1e-9)}
        if own is not None:
            out["level"] = float(math.prod(own["task"].level))
            out["solved"] = float(own["curriculum"].solved_length) if own["curriculum"] else 0.0
        return out

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, outputs, context):
        """Sums over one evaluation window (see the module docstring for their meaning)."""
        logits = outputs["logits"]
        data = self._eval_data if self.own is not None else None
        y, mask = self._context(context, data)
        if self.params["objective"] == "chars":
            batch = logits.shape[0]
            y = y.long().reshape(batch, -1).expand(batch, logits.shape[1])
            m = mask.reshape(batch, -1).expand_as(y) if mask is not None else torch.ones_like(y)
            nll = F.cross_entropy(logits.transpose(1, 2), y, reduction="none")
            return {
                "correct": float(((logits.argmax(-1) == y).float() * m).sum()),
                "total": float(m.sum()),
                "loss_sum": float((nll * m).sum()) / math.log(2.0),
            }
        return self._episode_sums(logits, y, mask, self._eval_reset)

    def _episode_sums(self, logits, y, mask, reset) -> dict[str, float]:
        """Bit errors per finished episode; episodes end where the next one's reset comes."""
        if y.dim() < 3:
            return {"correct": 0.0, "total": 0.0, "loss_sum": 0.0}
        wrong = ((logits > 0) != (y > 0.5)).sum(-1).to(torch.float64) * (mask > 0)
        tracker = self._tracker(logits.shape[0])
        sums = {"correct": 0.0, "total": 0.0, "loss_sum": 0.0}
        for t in range(wrong.shape[1]):
            for b in torch.nonzero(reset[:, t]).flatten().tolist():
                if tracker["open"][b]:
                    sums["total"] += 1
                    sums["loss_sum"] += float(tracker["err"][b])
                    sums["correct"] += float(tracker["err"][b] == 0)
                tracker["open"][b], tracker["err"][b] = True, 0.0
            tracker["err"] += wrong[:, t].numpy()
        return sums

    def _tracker(self, batch: int) -> dict:
        t = getattr(self, "_episodes", None)
        if t is None or t["at"] != self.windows or len(t["err"]) != batch:
            t = {"at": self.windows, "open": [False] * batch, "err": np.zeros(batch)}
            self._episodes = t
        return t
