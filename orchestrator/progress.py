"""Live progress of a run: one updating line on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time


def clock(seconds: float) -> str:
    """`75.2` as "1:15", `3725` as "1:02:05"."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Shows step, loss, accuracy, samples/s, elapsed time and ETA as metrics arrive (stderr).

    On a terminal the line is redrawn in place; elsewhere (CI logs, pipes) a plain line is
    printed at most every `interval_s` seconds, and every evaluation gets its own line.
    Elapsed time counts from `started_at` (`time.monotonic()` of the command's start); the
    ETA is the steps left over the head's latest rate.
    """

    def __init__(
        self,
        batch_size: int,
        stream=None,
        interval_s: float = 5.0,
        enabled: bool = True,
        started_at: float | None = None,
        env_steps: bool = False,
    ) -> None:
        self.stream = stream or sys.stderr
        # A run with an env agent (docs/rl.md): steps are env steps, the rate is the env's
        # SPS, and the line shows the mean return of the latest episodes.
        self.env_steps = env_steps
        self.tty = self.stream.isatty()
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.enabled = enabled
        self.values: dict[str, float] = {}
        self._late: dict[str, float] = {}
        self._last_print = 0.0
        self.started_at = time.monotonic() if started_at is None else started_at

    def _line(self, budget: int) -> str:
        v = self.values
        parts = [f"{'env step' if self.env_steps else 'step'} {int(v.get('steps', 0))}/{budget or '?'}"]
        if "return" in v:
            parts.append(f"return {v['return']:.1f}")
        if "loss" in v:
            parts.append(f"loss {v['loss']:.4f}")
        if "train_accuracy" in v:
            parts.append(f"train acc {100 * v['train_accuracy']:.1f}%")
        if "test_accuracy" in v:
            parts.append(f"test acc {100 * v['test_accuracy']:.2f}%")
        if "steps_per_s" in v:
            parts.append(f"{v['steps_per_s'] * self.batch_size:,.0f} {'SPS' if self.env_steps else 'samples/s'}")
        parts.append(f"elapsed {clock(time.monotonic() - self.started_at)}")
        rate, left = v.get("steps_per_s", 0.0), budget - v.get("steps", 0)
        if budget and rate > 0 and left > 0:
            parts.append(f"ETA {clock(left / rate)}")
        if self._late:
            parts.append("late: " + ", ".join(f"{n} {s:.1f} s" for n, s in sorted(self._late.items())))
        return " | ".join(parts)

    def late(self, agents: dict[str, float]) -> None:
        """Agents whose heartbeat is overdue, with seconds since they were last heard; shown
        on the line until they are heard again."""
        self._late = agents

    def update(self, agent: str, metrics: dict, budget: int) -> None:
        """Fold in one agent's metrics and redraw when due."""
        if not self.enabled:
            return
        for key in ("loss", "train_accuracy", "test_accuracy"):
            if key in metrics:
                self.values[key] = metrics[key]
        if "steps_per_s" in metrics and ("global_step" if self.env_steps else "loss") in metrics:  # the head's rate, or the env's
            self.values["steps_per_s"] = metrics["steps_per_s"]
        if "charts/episodic_return_mean" in metrics and metrics["charts/episodic_return_mean"] == metrics["charts/episodic_return_mean"]:
            self.values["return"] = metrics["charts/episodic_return_mean"]  # not NaN: an episode has ended
        if "steps" in metrics:
            self.values["steps"] = max(self.values.get("steps", 0), metrics["steps"])
        if "eval" in metrics and not self.env_steps:
            self.values["steps"] = max(self.values.get("steps", 0), metrics["train_steps"])
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + self._line(budget))
            self.stream.flush()
        elif "eval" in metrics or now - self._last_print >= self.interval_s:
            self.stream.write(self._line(budget) + "\n")
            self.stream.flush()
            self._last_print = now

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
