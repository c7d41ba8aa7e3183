"""Optional TensorBoard scalars of a run (`synthgrad run --tensorboard`), named as CleanRL names them.

The same reports that go to metrics.jsonl become scalars in `<run>/tensorboard/`:

    charts/test_accuracy, losses/test_loss   evaluation reports; step = `train_steps`
    losses/task_loss, charts/train_accuracy  a terminal agent's `loss`, `train_accuracy`
    charts/SPS                               samples/s: a terminal agent's `steps_per_s` * batch size
    charts/<agent>/steps_per_s               every agent
    charts/<agent>/<key>                     a terminal agent's other numbers (`bpc`, `aux_loss`,
                                             `messages_in_per_s`, ...), not its counters or flags
    sg/<link>/loss|cosine|norm_ratio|staleness   `sg_loss.LINK`, ... (agents/runtime/sg_quality.py)
    sg/<link>/si_loss                        `si_loss.LINK`, a synthetic-input model's loss

Training scalars are at the reporting agent's `steps`.  `<link>` is `SRC->DST` with `->`
written `_to_` (`l1->l2` is `sg/l1_to_l2/loss`), since tags allow only `[A-Za-z0-9_.\\-/]`;
any other character outside that set becomes `_`.  A terminal agent is one that has reported
`loss` at least once: a head whose window held no step still gets its SPS (0) plotted.  With
more than one terminal agent (examples/two_timescale.toml), pass `heads`: the CleanRL tags then
end in `/<agent>` so that heads at different step counts do not zigzag on one curve.

Values that are not finite numbers (None, NaN, inf of a diverged run; strings, bytes, lists
a peer's meta may hold) are skipped: metrics.jsonl keeps them, a plot cannot.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .reports import COUNTERS, COUNTS, FLAGS

MISSING = "TensorBoard scalars need the tensorboard package: pip install 'synthgrad[tensorboard]'"
# Link quantities by metrics prefix, and the last part of their tag.
LINK_KEYS = {"sg_loss.": "loss", "sg_cosine.": "cosine", "sg_norm_ratio.": "norm_ratio", "sg_staleness.": "staleness", "si_loss.": "si_loss"}
# Keys with a tag of their own, and counters: not repeated under charts/<agent>/.
NAMED = ("loss", "train_accuracy", "steps_per_s", "test_accuracy", "test_loss", "rejected", "updates", *COUNTS, *FLAGS)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")


def check_available() -> str | None:
    """The message to exit with when TensorBoard scalars cannot be written, else None."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (raises ImportError without tensorboard)
    except ImportError:
        return MISSING
    return None


def tag_safe(name: str) -> str:
    """`name` as part of a tag: `->` becomes `_to_`, any other disallowed character `_`."""
    return _UNSAFE.sub("_", name.replace("->", "_to_"))


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class TensorBoardWriter:
    """Writes each agent's metrics reports as scalars into `log_dir` (see the module docstring).

    `batch_size` is the run's training batch (samples per step), for charts/SPS.  `heads`, the
    terminal agents' names where known, matters only when there are two or more of them.
    Raises ImportError (message `MISSING`) when the tensorboard package is not installed.
    """

    def __init__(self, log_dir: Path, batch_size: int, heads: Collection[str] = ()) -> None:
        try:  # torch.utils.tensorboard imports tensorboard: a plain run must not need it
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(MISSING) from err
        # SummaryWriter's defaults: flush every 120 s or every 10 queued events, whichever first.
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.batch_size = batch_size
        self.per_head = len(set(heads)) > 1
        self.terminal: set[str] = set()
        self.global_step: int | None = None  # the env agent's latest, in a run with one

    def _add(self, tag: str, value: Any, step: int, t: float | None) -> None:
        number = _number(value)
        if number is not None:
            self.writer.add_scalar(tag, number, global_step=step, walltime=t)

    def _head(self, tag: str, agent: str) -> str:
        return f"{tag}/{tag_safe(agent)}" if self.per_head else tag

    def record(self, agent: str, metrics: dict, t: float | None = None) -> None:
        """One METRICS report of `agent`, as the supervisor received it.

        `t` is the report's wall time in UNIX seconds (time.time()), TensorBoard's `walltime`
        axis; None stamps the time of this call, which differs by microseconds.
        """
        if "eval" in metrics:
            step = metrics.get("train_steps")
            if isinstance(step, int) and not isinstance(step, bool):
                self._add(self._head("charts/test_accuracy", agent), metrics.get("test_accuracy"), step, t)
                self._add(self._head("losses/test_loss", agent), metrics.get("test_loss"), step, t)
            return
        step = metrics.get("steps")
        if not isinstance(step, int) or isinstance(step, bool):
            return  # check_report lets only counts through; a report without one has no x
        if "global_step" in metrics:  # an env agent (docs/rl.md): CleanRL's x axis is env steps
            self.global_step = step
        if self.global_step is not None:
            # CleanRL's own names ("charts/episodic_return", "losses/approx_kl") as they are,
            # at the env steps taken when the report came.
            for key, value in metrics.items():
                if key.startswith(("charts/", "losses/")):
                    self._add(key, value, self.global_step, t)
            if "global_step" in metrics:
                return
        if "loss" in metrics:
            self.terminal.add(agent)
        name = tag_safe(agent)
        rate = _number(metrics.get("steps_per_s"))
        self._add(f"charts/{name}/steps_per_s", rate, step, t)
        for key, value in metrics.items():
            prefix = next((p for p in LINK_KEYS if key.startswith(p)), None)
            if prefix is not None:
                self._add(f"sg/{tag_safe(key[len(prefix):])}/{LINK_KEYS[prefix]}", value, step, t)
            elif agent in self.terminal and key not in NAMED and not key.startswith((*COUNTERS, "charts/", "losses/")):
                self._add(f"charts/{name}/{tag_safe(key)}", value, step, t)
        if agent in self.terminal:
            self._add(self._head("losses/task_loss", agent), metrics.get("loss"), step, t)
            self._add(self._head("charts/train_accuracy", agent), metrics.get("train_accuracy"), step, t)
            if rate is not None and self.global_step is None:  # an env agent reports its own SPS
                self._add(self._head("charts/SPS", agent), rate * self.batch_size, step, t)

    def close(self) -> None:
        """Flush what is queued and close the event file."""
        self.writer.close()
