"""Tests for synthgrad.environments.batches."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from synthgrad.environments.batches import BatchStream, iter_batches
from synthgrad.environments.datasets import ImageSet, load_dataset


def toy_set(n: int = 10) -> ImageSet:
    """Image i is filled with i/n and labelled i, so a batch reveals which examples it holds."""
    images = np.repeat((np.arange(n, dtype=np.float32) / n)[:, None, None, None], 4, axis=2)
    return ImageSet(images=images, labels=np.arange(n), num_classes=n, name="toy", split="train")


def draw(stream: BatchStream, count: int) -> list[np.ndarray]:
    return [stream.next_batch()[1] for _ in range(count)]


def test_batches_have_shape_and_dtype():
    stream = BatchStream(load_dataset("digits", "train"), batch_size=32, seed=0)
    images, labels = stream.next_batch()
    assert images.shape == (32, 1, 8, 8) and images.dtype == np.float32
    assert labels.shape == (32,) and labels.dtype == np.int64


def test_images_follow_their_labels():
    images, labels = BatchStream(toy_set(), batch_size=4, seed=3).next_batch()
    np.testing.assert_allclose(images[:, 0, 0, 0], labels / 10, rtol=1e-6)


def test_same_seed_gives_same_sequence_over_epochs():
    a = BatchStream(toy_set(), batch_size=3, seed=7)
    b = BatchStream(toy_set(), batch_size=3, seed=7)
    for x, y in zip(draw(a, 10), draw(b, 10), strict=True):
        np.testing.assert_array_equal(x, y)


def test_different_seeds_and_epochs_differ():
    a = draw(BatchStream(toy_set(), batch_size=10, seed=1), 2)
    b = draw(BatchStream(toy_set(), batch_size=10, seed=2), 1)
    assert not np.array_equal(a[0], a[1])  # epoch 0 and epoch 1 orders differ
    assert not np.array_equal(a[0], b[0])


def test_epoch_order_is_the_documented_permutation():
    stream = BatchStream(toy_set(), batch_size=5, seed=11)
    for epoch in range(2):
        expected = np.random.default_rng([11, epoch]).permutation(10)
        np.testing.assert_array_equal(np.concatenate(draw(stream, 2)), expected)


def test_drop_last_skips_the_short_batch():
    stream = BatchStream(toy_set(), batch_size=4, seed=0)
    assert stream.batches_per_epoch == 2
    epoch0 = np.concatenate(draw(stream, 2))
    assert stream.epoch == 1
    assert len(set(epoch0.tolist())) == 8


def test_without_drop_last_each_epoch_covers_every_example_once():
    stream = BatchStream(toy_set(), batch_size=4, seed=0, drop_last=False)
    assert stream.batches_per_epoch == 3
    batches = draw(stream, 3)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(np.concatenate(batches).tolist()) == list(range(10))


def test_no_shuffle_keeps_stored_order():
    stream = BatchStream(toy_set(), batch_size=5, seed=0, shuffle=False)
    np.testing.assert_array_equal(np.concatenate(draw(stream, 4)), np.tile(np.arange(10), 2))


def test_batch_by_step_matches_the_stream_and_does_not_move_it():
    stream = BatchStream(toy_set(), batch_size=3, seed=5)
    looked_up = [stream.batch(s)[1] for s in range(7)]
    assert stream.step == 0
    for x, y in zip(looked_up, draw(stream, 7), strict=True):
        np.testing.assert_array_equal(x, y)


def test_iter_eval_yields_every_example_once_in_order():
    stream = BatchStream(toy_set(), batch_size=4, seed=0)
    stream.next_batch()
    batches = list(stream.iter_eval(3))
    assert [len(labels) for _, labels in batches] == [3, 3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.arange(10))
    assert stream.step == 1


def test_iter_batches_rejects_non_positive_batch_size():
    with pytest.raises(ValueError):
        list(iter_batches(toy_set(), 0))


def test_state_dict_resumes_the_sequence():
    a = BatchStream(toy_set(), batch_size=3, seed=4)
    draw(a, 5)
    b = BatchStream(toy_set(), batch_size=3, seed=4)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.next_batch()[1], b.next_batch()[1])


def test_state_dict_from_another_seed_is_refused():
    state = BatchStream(toy_set(), batch_size=3, seed=4).state_dict()
    with pytest.raises(ValueError, match="seed"):
        BatchStream(toy_set(), batch_size=3, seed=5).load_state_dict(state)


def test_batch_larger_than_dataset_is_refused_with_drop_last():
    with pytest.raises(ValueError, match="exceeds"):
        BatchStream(toy_set(), batch_size=11, seed=0)


DIGEST_SCRIPT = """
import hashlib
from synthgrad.environments import BatchStream, load_dataset
s = BatchStream(load_dataset("digits", "train"), batch_size=64, seed=123)
h = hashlib.sha256()
for _ in range(30):
    x, y = s.next_batch()
    h.update(x.tobytes()); h.update(y.tobytes())
print(h.hexdigest())
"""


def test_same_seed_gives_same_batches_in_another_process():
    # A data-source agent and a single-process reference must see byte-identical batches.
    stream = BatchStream(load_dataset("digits", "train"), batch_size=64, seed=123)
    h = hashlib.sha256()
    for _ in range(30):  # 30 batches span two epochs of 22
        x, y = stream.next_batch()
        h.update(x.tobytes())
        h.update(y.tobytes())
    out = subprocess.run(
        [sys.executable, "-c", DIGEST_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == h.hexdigest()
