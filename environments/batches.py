"""Reproducible mini-batches over an :class:`~synthgrad.environments.datasets.ImageSet`.

The order of examples is a pure function of ``(seed, epoch)``: epoch ``e`` visits the examples
in the order ``np.random.default_rng([seed, e]).permutation(N)``. Two streams built with the same
seed therefore yield the same batches in any process, which is how a data-source agent and a
single-process reference run see identical data, and how any agent can recompute the labels of
step ``s`` with :meth:`BatchStream.batch` instead of receiving them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .datasets import ImageSet

__all__ = ["BatchStream", "iter_batches"]


def iter_batches(dataset: ImageSet, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(images, labels)`` covering every example exactly once, in stored order.

    The last batch is short when ``batch_size`` does not divide the set. Used for evaluation,
    where every test example must count once.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    for start in range(0, len(dataset), batch_size):
        stop = start + batch_size
        yield dataset.images[start:stop], dataset.labels[start:stop]


class BatchStream:
    """An endless, deterministic stream of training batches.

    Args:
        dataset: the examples to draw from.
        batch_size: examples per batch.
        seed: fixes every epoch's order (see the module docstring).
        shuffle: permute each epoch; if False every epoch is in stored order.
        drop_last: skip an epoch's final short batch so every batch has ``batch_size`` examples.

    Attributes:
        epoch: the epoch the next batch comes from.
        step: how many batches :meth:`next_batch` has returned (the next batch's global step id).
        batches_per_epoch: batches in one epoch.
    """

    def __init__(
        self,
        dataset: ImageSet,
        batch_size: int,
        seed: int,
        shuffle: bool = True,
        drop_last: bool = True,
    ) -> None:
        n = len(dataset)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if drop_last and batch_size > n:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {n} examples with drop_last=True"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.batches_per_epoch = n // batch_size if drop_last else -(-n // batch_size)
        self.step = 0
        self._order_epoch = -1
        self._order = np.arange(n)

    @property
    def epoch(self) -> int:
        """The epoch that the next call to :meth:`next_batch` draws from."""
        return self.step // self.batches_per_epoch

    def order(self, epoch: int) -> np.ndarray:
        """Indices of the dataset in the order epoch ``epoch`` visits them."""
        if epoch != self._order_epoch:
            n = len(self.dataset)
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(n)
            else:
                self._order = np.arange(n)
            self._order_epoch = epoch
        return self._order

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch with global step id ``step``, without moving the stream.

        Returns fresh arrays ``images [B, 1, H, W]`` float32 and ``labels [B]`` int64.
        """
        if step < 0:
            raise ValueError(f"step must be non-negative, got {step}")
        epoch, index = divmod(step, self.batches_per_epoch)
        start = index * self.batch_size
        idx = self.order(epoch)[start : start + self.batch_size]
        return self.dataset.images[idx], self.dataset.labels[idx]

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the next ``(images, labels)`` and advance the stream by one step."""
        out = self.batch(self.step)
        self.step += 1
        return out

    def iter_eval(self, batch_size: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every example of the dataset exactly once, in stored order (last batch may be short).

        Independent of the stream's position; ``batch_size`` defaults to the stream's.
        """
        return iter_batches(self.dataset, batch_size or self.batch_size)

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint needs to resume the stream (with the same dataset and arguments)."""
        return {"step": self.step, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict`; refuses a state made with another seed or batch size."""
        if state["seed"] != self.seed or state["batch_size"] != self.batch_size:
            raise ValueError(
                f"state is for seed={state['seed']}, batch_size={state['batch_size']}; "
                f"this stream has seed={self.seed}, batch_size={self.batch_size}"
            )
        self.step = int(state["step"])
