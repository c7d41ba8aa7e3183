"""The NTM Copy and Repeat Copy tasks with the DNI paper's curriculum, as numpy arrays.

Copy (Graves et al. 2014, used by Jaderberg et al. 2016): the model reads ``N`` random binary
vectors of width ``W``, then a delimiter, and must then write the ``N`` vectors back::

    step         0 .. N-1         N            N+1 .. 2N
    input        bits             delimiter    zeros            (channels: W bits + delimiter)
    target       -                -            bits             (channels: W bits)
    mask         0                0            1

Repeat Copy: after the ``N`` vectors, the delimiter step also carries the repeat count ``R`` on
its own channel, normalised as the NTM paper did (zero mean, unit variance over the NTM's
training range of R, 1..10, so the value does not drift as the curriculum grows R). The model
must write the sequence ``R`` times and then raise an end marker::

    step         0 .. N-1    N                  N+1 .. N+N*R       N+N*R+1
    input        bits        delimiter, R'      zeros              zeros     (W + 2 channels)
    target       -           -                  bits x R, mark 0   mark 1    (W bits + end mark)
    mask         0           0                  1                  1

Episodes come batched (``task.batch``, padded with mask 0 when lengths differ) or as one
continuous stream cut into truncation windows that need not align with episode starts
(:class:`EpisodeStream`), which is how the paper trains its recurrent cores with truncated BPTT.

:class:`Curriculum` applies the paper's rule: once the mean error drops below 0.15 bits per
sequence, Copy grows ``N`` by one and Repeat Copy alternately grows ``N`` and ``R``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "CopyTask",
    "Curriculum",
    "Episode",
    "EpisodeStream",
    "RepeatCopyTask",
    "bit_errors",
]


@dataclass(frozen=True, eq=False)  # arrays: compare by identity
class Episode:
    """One sequence of a task: ``inputs [L, C]``, ``targets [L, W']``, ``mask [L]``, float32."""

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.mask.shape[0])


class _BitTask:
    """Shared machinery: sampling bits, batching with padding, the current difficulty level."""

    name = ""
    input_size = 0
    target_size = 0

    def __init__(self, width: int, length: int, vary_length: bool) -> None:
        if width < 1 or length < 1:
            raise ValueError(f"width and length must be >= 1, got width={width}, length={length}")
        self.width = int(width)
        self.length = int(length)
        # Drawing N uniformly from 1..length keeps shorter tasks in the mix (guards against
        # forgetting as the curriculum grows); off by default, as the level is the length.
        self.vary_length = bool(vary_length)

    def _draw_length(self, rng: np.random.Generator) -> int:
        return int(rng.integers(1, self.length + 1)) if self.vary_length else self.length

    def _bits(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, 2, size=(n, self.width)).astype(np.float32)

    def episode(self, rng: np.random.Generator) -> Episode:
        """Sample one episode at the current level."""
        raise NotImplementedError

    def batch(
        self, batch_size: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``batch_size`` episodes: ``inputs [B, L, C]``, ``targets [B, L, W']``, ``mask [B, L]``.

        ``L`` is the longest episode drawn; shorter ones are padded at the end with zeros and
        mask 0, so the loss never counts padding.
        """
        episodes = [self.episode(rng) for _ in range(batch_size)]
        longest = max(len(e) for e in episodes)
        inputs = np.zeros((batch_size, longest, self.input_size), np.float32)
        targets = np.zeros((batch_size, longest, self.target_size), np.float32)
        mask = np.zeros((batch_size, longest), np.float32)
        for b, e in enumerate(episodes):
            inputs[b, : len(e)] = e.inputs
            targets[b, : len(e)] = e.targets
            mask[b, : len(e)] = e.mask
        return inputs, targets, mask


class CopyTask(_BitTask):
    """NTM Copy: read ``N`` bit vectors and a delimiter, then write the vectors back.

    Args:
        width: bits per vector ``W`` (8 in the paper).
        length: ``N``, the level the curriculum grows.
        vary_length: draw each episode's ``N`` uniformly from ``1..length`` instead.

    Inputs have ``W + 1`` channels (bits, delimiter); targets ``W``.
    """

    name = "copy"

    def __init__(self, width: int = 8, length: int = 1, vary_length: bool = False) -> None:
        super().__init__(width, length, vary_length)
        self.input_size = self.width + 1
        self.target_size = self.width

    def encode(self, bits: np.ndarray) -> Episode:
        """The episode that copies the given ``bits [N, W]``."""
        bits = np.asarray(bits, dtype=np.float32)
        n, w = bits.shape
        if w != self.width:
            raise ValueError(f"bits have width {w}, task width is {self.width}")
        inputs = np.zeros((2 * n + 1, w + 1), np.float32)
        targets = np.zeros((2 * n + 1, w), np.float32)
        mask = np.zeros(2 * n + 1, np.float32)
        inputs[:n, :w] = bits
        inputs[n, w] = 1.0
        targets[n + 1 :] = bits
        mask[n + 1 :] = 1.0
        return Episode(inputs, targets, mask)

    def episode(self, rng: np.random.Generator) -> Episode:
        """Sample one episode at the current level."""
        return self.encode(self._bits(rng, self._draw_length(rng)))

    @property
    def episode_length(self) -> int:
        """Steps in an episode at the current level (the longest when lengths vary)."""
        return 2 * self.length + 1

    @property
    def level(self) -> tuple[int, ...]:
        """The current difficulty ``(N,)``."""
        return (self.length,)

    def set_level(self, level: tuple[int, ...]) -> None:
        """Set the difficulty, e.g. from a curriculum running in another process."""
        (self.length,) = (int(v) for v in level)


class RepeatCopyTask(_BitTask):
    """NTM Repeat Copy: read ``N`` bit vectors and a count ``R``, write them ``R`` times, then stop.

    Args:
        width: bits per vector ``W``.
        length: ``N``; the curriculum grows it alternately with ``repeats``.
        repeats: ``R``.
        vary_length: draw each episode's ``N`` from ``1..length`` and ``R`` from ``1..repeats``.
        repeat_range: the range of ``R`` whose uniform distribution defines the normalisation
            ``(R - mean) / std`` of the count channel (the NTM paper's 1..10 by default).

    Inputs have ``W + 2`` channels (bits, delimiter, normalised count); targets ``W + 1``
    (bits, end marker).
    """

    name = "repeat_copy"

    def __init__(
        self,
        width: int = 8,
        length: int = 1,
        repeats: int = 1,
        vary_length: bool = False,
        repeat_range: tuple[int, int] = (1, 10),
    ) -> None:
        super().__init__(width, length, vary_length)
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.repeats = int(repeats)
        lo, hi = repeat_range
        self._repeat_mean = (lo + hi) / 2.0
        self._repeat_std = math.sqrt(((hi - lo + 1) ** 2 - 1) / 12.0) or 1.0
        self.input_size = self.width + 2
        self.target_size = self.width + 1

    def normalise_repeats(self, repeats: int) -> float:
        """The value presented on the count channel for ``repeats`` copies."""
        return (repeats - self._repeat_mean) / self._repeat_std

    def encode(self, bits: np.ndarray, repeats: int) -> Episode:
        """The episode that repeats the given ``bits [N, W]`` ``repeats`` times."""
        bits = np.asarray(bits, dtype=np.float32)
        n, w = bits.shape
        if w != self.width:
            raise ValueError(f"bits have width {w}, task width is {self.width}")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        total = n * (repeats + 1) + 2
        inputs = np.zeros((total, w + 2), np.float32)
        targets = np.zeros((total, w + 1), np.float32)
        mask = np.zeros(total, np.float32)
        inputs[:n, :w] = bits
        inputs[n, w] = 1.0
        inputs[n, w + 1] = self.normalise_repeats(repeats)
        targets[n + 1 : total - 1, :w] = np.tile(bits, (repeats, 1))
        targets[total - 1, w] = 1.0
        mask[n + 1 :] = 1.0
        return Episode(inputs, targets, mask)

    def episode(self, rng: np.random.Generator) -> Episode:
        """Sample one episode at the current level."""
        n = self._draw_length(rng)
        r = int(rng.integers(1, self.repeats + 1)) if self.vary_length else self.repeats
        return self.encode(self._bits(rng, n), r)

    @property
    def episode_length(self) -> int:
        """Steps in an episode at the current level (the longest when lengths vary)."""
        return self.length * (self.repeats + 1) + 2

    @property
    def level(self) -> tuple[int, ...]:
        """The current difficulty ``(N, R)``."""
        return (self.length, self.repeats)

    def set_level(self, level: tuple[int, ...]) -> None:
        """Set the difficulty, e.g. from a curriculum running in another process."""
        self.length, self.repeats = (int(v) for v in level)


def bit_errors(
    outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray, from_logits: bool = True
) -> np.ndarray:
    """Wrong bits per row where the mask counts: ``[B, L, W']`` arrays in, ``[B]`` float64 out.

    A bit is predicted 1 where the logit is positive (or the probability above 0.5 with
    ``from_logits=False``). Summing over a whole episode gives the paper's bits per sequence.
    """
    predicted = outputs > (0.0 if from_logits else 0.5)
    wrong = predicted != (targets > 0.5)
    return (wrong.sum(axis=-1) * (mask > 0)).sum(axis=-1).astype(np.float64)


class Curriculum:
    """The DNI paper's curriculum on Copy or Repeat Copy.

    Report errors with :meth:`observe`; once at least ``min_sequences`` sequences have been
    reported, their mean bits-per-sequence error is compared with ``threshold``. Below it, the
    current level counts as solved and the task grows: Copy's ``N`` by one; Repeat Copy's ``N``
    and ``R`` in turn, ``N`` first. Either way the tally restarts.

    Args:
        task: the task to grow (mutated in place, so streams sampling it follow).
        threshold: bits per sequence below which a level is solved (0.15 in the paper).
        min_sequences: sequences to average over before judging a level.

    Attributes:
        solved: the levels solved so far, in order.
        last_error: the mean bits per sequence of the last judged tally (``nan`` before one).
    """

    def __init__(
        self, task: CopyTask | RepeatCopyTask, threshold: float = 0.15, min_sequences: int = 256
    ) -> None:
        self.task = task
        self.threshold = float(threshold)
        self.min_sequences = int(min_sequences)
        self.solved: list[tuple[int, ...]] = []
        self.last_error = math.nan
        self._errors = 0.0
        self._sequences = 0.0
        self._grow_repeats_next = False

    def observe(self, errors: float | np.ndarray, sequences: float | None = None) -> bool:
        """Report errors; returns True when this report made the task grow.

        Args:
            errors: per-sequence bit errors (an array, e.g. from :func:`bit_errors`), or a total.
            sequences: how many sequences ``errors`` covers; defaults to ``len(errors)``. In a
                stream, count the episodes that ended (or, near enough, started) in the windows.
        """
        errors_arr = np.asarray(errors, dtype=np.float64)
        if sequences is None:
            if errors_arr.ndim != 1:
                raise ValueError("give sequences= when errors is a total, not per-sequence")
            sequences = errors_arr.shape[0]
        self._errors += float(errors_arr.sum())
        self._sequences += float(sequences)
        if self._sequences < self.min_sequences:
            return False
        self.last_error = self._errors / self._sequences
        self._errors = self._sequences = 0.0
        if self.last_error >= self.threshold:
            return False
        self.solved.append(self.task.level)
        self._grow()
        return True

    def _grow(self) -> None:
        if isinstance(self.task, RepeatCopyTask) and self._grow_repeats_next:
            self.task.repeats += 1
        else:
            self.task.length += 1
        self._grow_repeats_next = (
            isinstance(self.task, RepeatCopyTask) and not self._grow_repeats_next
        )

    @property
    def level(self) -> tuple[int, ...]:
        """The level being trained now."""
        return self.task.level

    @property
    def solved_length(self) -> int:
        """The largest task length solved: ``N`` for Copy, ``N * R`` (the output length) for
        Repeat Copy; 0 before any level is solved."""
        if not self.solved:
            return 0
        return max(math.prod(level) for level in self.solved)


class EpisodeStream:
    """Episodes laid end to end in ``batch_size`` independent rows, read in windows of ``T`` steps.

    Each row draws its episodes from its own generator ``default_rng([seed, row])`` at the
    task's level when the episode starts, so growing the task (e.g. by a :class:`Curriculum`)
    takes effect from each row's next episode. Windows ignore episode boundaries, as in the
    paper's training on a stream; ``episode_reset`` marks each episode's first step.

    Args:
        task: a :class:`CopyTask` or :class:`RepeatCopyTask`.
        batch_size: rows ``B``.
        seed: fixes every row's episodes.
        desync: start each row a random number of idle steps (input 0, mask 0) into the stream so
            that rows do not all switch episodes in the same window.

    Attributes:
        episodes_started: episodes begun so far, over all rows.
    """

    def __init__(
        self, task: CopyTask | RepeatCopyTask, batch_size: int, seed: int, desync: bool = True
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.task = task
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.episodes_started = 0
        self._rngs = [np.random.default_rng([self.seed, b]) for b in range(self.batch_size)]
        self._current: list[Episode] = []
        self._pos = [0] * self.batch_size
        self._fresh = [False] * self.batch_size  # next step emitted is an episode's first
        for rng in self._rngs:
            idle = int(rng.integers(0, task.episode_length)) if desync else 0
            # The idle prefix is a pseudo-episode: never counted, never marked as a reset.
            self._current.append(
                Episode(
                    np.zeros((idle, task.input_size), np.float32),
                    np.zeros((idle, task.target_size), np.float32),
                    np.zeros(idle, np.float32),
                )
            )

    def next_window(self, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The next ``steps`` time steps of every row.

        Returns:
            ``inputs [B, T, C]``, ``targets [B, T, W']``, ``mask [B, T]`` (1 where the loss
            counts) and ``episode_reset [B, T]`` (1 on the first step of an episode), float32.
        """
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        B, task = self.batch_size, self.task
        inputs = np.zeros((B, steps, task.input_size), np.float32)
        targets = np.zeros((B, steps, task.target_size), np.float32)
        mask = np.zeros((B, steps), np.float32)
        reset = np.zeros((B, steps), np.float32)
        for b in range(B):
            t = 0
            while t < steps:
                ep, pos = self._current[b], self._pos[b]
                if pos >= len(ep):
                    self._current[b] = task.episode(self._rngs[b])
                    self._pos[b] = 0
                    self._fresh[b] = True
                    self.episodes_started += 1
                    continue
                take = min(steps - t, len(ep) - pos)
                inputs[b, t : t + take] = ep.inputs[pos : pos + take]
                targets[b, t : t + take] = ep.targets[pos : pos + take]
                mask[b, t : t + take] = ep.mask[pos : pos + take]
                if self._fresh[b]:
                    reset[b, t] = 1.0
                    self._fresh[b] = False
                self._pos[b] = pos + take
                t += take
        return inputs, targets, mask, reset


def make_task(name: str, width: int, length: int, repeats: int = 1) -> CopyTask | RepeatCopyTask:
    """A Copy or Repeat Copy task by name (`copy`, `repeat_copy`)."""
    if name == "copy":
        return CopyTask(width, length)
    if name == "repeat_copy":
        return RepeatCopyTask(width, length, repeats)
    raise ValueError(f"unknown task {name!r}; known: copy, repeat_copy")


def with_reset(inputs: np.ndarray, reset: np.ndarray) -> np.ndarray:
    """``inputs [B, T, C]`` with the reset flag ``[B, T]`` appended as channel ``C``."""
    return np.concatenate([inputs, reset[..., None].astype(np.float32)], axis=-1)


# Held-out data (episodes, the order of test digits) come from generators no training row uses
# (training rows use [seed, row]); every kind that holds data out uses this one seed.
EVAL_SEED = 1_000_003
