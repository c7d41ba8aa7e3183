"""Sequence sources for recurrent agents: `copy_task` (Copy / Repeat Copy) and `text` (Shakespeare).

Each training step emits one truncation window of ``T = window`` steps for every row:

    port   shape            meaning
    x      [B, T, C + 1]    the task's input channels, then the episode-reset flag (1 on the
                            first step of an episode or of a new text epoch)
    y      [B, T, W'] / [B, T]   targets: bits (float) for the bit tasks, next-character ids
                            (int64) for text
    mask   [B, T]           1 where the loss counts

The reset flag rides in `x` rather than on a port of its own because an agent's `forward`
sees only its data ports, and the recurrent core must reset its state *inside* a window
(episodes of a continuous stream start anywhere in it). Text characters are sent one-hot so
that both sources feed the same `rnn` kind.

Evaluation is finite: `eval_windows` windows of held-out episodes (a separate generator,
every row starting an episode at step 0) or of the validation text from its start.
"""

from __future__ import annotations

import numpy as np

from ...environments.sequence_tasks import EVAL_SEED, EpisodeStream, make_task, with_reset
from ..base import Source
from ..errors import ParamError


class CopyTaskSource(Source):
    """Copy / Repeat Copy as a continuous stream of windows (see the module docstring).

    Parameters: `task` (copy, repeat_copy), `width` (bits per vector), `length` (N),
    `repeats` (R, Repeat Copy), `window` (T), `eval_windows`, `desync` (rows start their
    first episode at random offsets so they do not all switch in the same window).

    The level is fixed here; the curriculum, which needs the errors only the `rnn` agent
    sees, runs inside that agent when it is given `task` (see agents/kinds/recurrent.py).
    """

    kind = "copy_task"
    outputs = ("x", "y", "mask")
    defaults = {"task": "copy", "width": 8, "length": 1, "repeats": 1, "window": 3, "eval_windows": 20, "desync": True}

    def __init__(self, name: str, params: dict) -> None:
        super().__init__(name, params)
        p = self.params
        try:
            self.task = make_task(p["task"], int(p["width"]), int(p["length"]), int(p["repeats"]))
        except ValueError as err:
            raise ParamError("task", str(err)) from None
        self.window = int(p["window"])
        if self.window < 1:
            raise ParamError("window", f"must be >= 1, got {self.window}")
        self.stream: EpisodeStream | None = None
        self.seed = 0

    def output_shapes(self):
        T = self.window
        return {"x": (T, self.task.input_size + 1), "y": (T, self.task.target_size), "mask": (T,)}

    @property
    def num_classes(self) -> int:
        return 2  # bits

    def steps_per_epoch(self, batch_size: int) -> int:
        # An endless stream: one "epoch" is a nominal 1000 windows (use run.steps).
        return 1000

    def open(self, batch_size: int, seed: int) -> None:
        self.seed = seed
        self.stream = EpisodeStream(self.task, batch_size, seed, desync=bool(self.params["desync"]))

    def train_batch(self):
        assert self.stream is not None, "open() first"
        inputs, targets, mask, reset = self.stream.next_window(self.window)
        return {"x": with_reset(inputs, reset), "y": targets, "mask": mask}

    def eval_batches(self, batch_size: int):
        stream = EpisodeStream(self.task, batch_size, EVAL_SEED + self.seed, desync=False)
        for _ in range(int(self.params["eval_windows"])):
            inputs, targets, mask, reset = stream.next_window(self.window)
            yield {"x": with_reset(inputs, reset), "y": targets, "mask": mask}


class TextSource(Source):
    """Shakespeare characters (environments/text.py) in windows, one-hot, for the `rnn` kind.

    Parameters: `window` (T), `eval_windows` (windows of the validation split, from its
    start, per evaluation), `shuffle` (play order per epoch).
    """

    kind = "text"
    outputs = ("x", "y", "mask")
    defaults = {"window": 20, "eval_windows": 20, "shuffle": True}

    def __init__(self, name: str, params: dict) -> None:
        super().__init__(name, params)
        self.window = int(self.params["window"])
        self.stream = None
        self._vocab: int | None = None
        self._epoch = -1

    @property
    def vocab(self) -> int:
        """Characters in the vocabulary (loads the corpus once)."""
        if self._vocab is None:
            from ...environments.text import load_corpus

            self._vocab = load_corpus().vocab_size
        return self._vocab

    def output_shapes(self):
        return {"x": (self.window, self.vocab + 1), "y": (self.window,), "mask": (self.window,)}

    @property
    def num_classes(self) -> int:
        return self.vocab

    def steps_per_epoch(self, batch_size: int) -> int:
        from ...environments.text import TextStream

        return TextStream("train", batch_size, shuffle=False).row_length // self.window

    def open(self, batch_size: int, seed: int) -> None:
        from ...environments.text import TextStream

        self.stream = TextStream("train", batch_size, seed, shuffle=bool(self.params["shuffle"]))
        self._epoch = -1

    def _window(self, x: np.ndarray, y: np.ndarray, reset_first: bool) -> dict[str, np.ndarray]:
        onehot = np.eye(self.vocab, dtype=np.float32)[x]
        reset = np.zeros(x.shape, np.float32)
        if reset_first:  # a new epoch's rows are unrelated text: the state must not carry over
            reset[:, 0] = 1.0
        return {"x": with_reset(onehot, reset), "y": y, "mask": np.ones(x.shape, np.float32)}

    def train_batch(self):
        assert self.stream is not None, "open() first"
        x, y = self.stream.next_window(self.window)
        fresh = self.stream.epoch != self._epoch
        self._epoch = self.stream.epoch
        return self._window(x, y, fresh)

    def eval_batches(self, batch_size: int):
        from ...environments.text import TextStream

        stream = TextStream("valid", batch_size, shuffle=False)
        for i, (x, y) in enumerate(stream.iter_eval(self.window)):
            if i >= int(self.params["eval_windows"]) or x.shape[1] != self.window:
                break
            yield self._window(x, y, i == 0)
