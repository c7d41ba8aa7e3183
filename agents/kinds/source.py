"""The built-in data `source`: image classification sets streamed as batches."""

from __future__ import annotations

import math

import numpy as np

from ...environments.batches import BatchStream, iter_batches
from ...environments.datasets import IMAGE_SETS, TRAIN_SIZES, load_dataset
from ..base import Source
from ..errors import ParamError


class DatasetSource(Source):
    """Streams a classification set: port `x` carries images, port `y` the labels.

    Parameters: `dataset` (mnist, fashion_mnist, digits), `flatten` (send images as vectors,
    for dense layers; false keeps (1, H, W) for conv layers), `shuffle`.
    """

    kind = "source"
    defaults = {"dataset": "mnist", "flatten": True, "shuffle": True}

    def __init__(self, name: str, params: dict) -> None:
        super().__init__(name, params)
        if self.params["dataset"] not in IMAGE_SETS:
            raise ParamError("dataset", f"unknown dataset {self.params['dataset']!r}; known: {sorted(IMAGE_SETS)}")
        self.image_shape, self._classes = IMAGE_SETS[self.params["dataset"]]
        self.stream: BatchStream | None = None

    def output_shapes(self):
        x = (math.prod(self.image_shape),) if self.params["flatten"] else self.image_shape
        return {"x": x, "y": ()}

    @property
    def num_classes(self) -> int:
        return self._classes

    @property
    def train_size(self) -> int:
        return TRAIN_SIZES[self.params["dataset"]]

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(load_dataset(self.params["dataset"], "train")) // batch_size

    def open(self, batch_size: int, seed: int) -> None:
        train = load_dataset(self.params["dataset"], "train")
        self.stream = BatchStream(train, batch_size, seed, shuffle=self.params["shuffle"])

    def _shaped(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1) if self.params["flatten"] else images

    def train_batch(self):
        assert self.stream is not None, "open() first"
        images, labels = self.stream.next_batch()
        return {"x": self._shaped(images), "y": labels}

    def eval_batches(self, batch_size: int):
        test = load_dataset(self.params["dataset"], "test")
        for images, labels in iter_batches(test, batch_size):
            yield {"x": self._shaped(images), "y": labels}
