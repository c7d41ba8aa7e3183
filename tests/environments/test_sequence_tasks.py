"""Tests for synthgrad.environments.sequence_tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthgrad.environments.sequence_tasks import (
    CopyTask,
    Curriculum,
    EpisodeStream,
    RepeatCopyTask,
    bit_errors,
)


def test_copy_hand_example():
    task = CopyTask(width=3)
    ep = task.encode(np.array([[1, 0, 1], [0, 1, 1]]))
    # step:          0 bits     1 bits     2 delim    3 out      4 out
    expected_in = [[1, 0, 1, 0], [0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    expected_out = [[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 1], [0, 1, 1]]
    np.testing.assert_array_equal(ep.inputs, expected_in)
    np.testing.assert_array_equal(ep.targets, expected_out)
    np.testing.assert_array_equal(ep.mask, [0, 0, 0, 1, 1])
    assert ep.inputs.dtype == ep.targets.dtype == ep.mask.dtype == np.float32


def test_repeat_copy_hand_example():
    task = RepeatCopyTask(width=2)
    ep = task.encode(np.array([[1, 0]]), repeats=3)
    r = (3 - 5.5) / math.sqrt(99 / 12)  # NTM: count normalised over uniform 1..10
    expected_in = [
        [1, 0, 0, 0],
        [0, 0, 1, r],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
    expected_out = [[0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 0, 1]]
    np.testing.assert_allclose(ep.inputs, expected_in, rtol=1e-6)
    np.testing.assert_array_equal(ep.targets, expected_out)
    np.testing.assert_array_equal(ep.mask, [0, 0, 1, 1, 1, 1])


def test_copy_batch_targets_are_the_inputs_after_the_delimiter():
    task = CopyTask(width=8, length=5)
    inputs, targets, mask = task.batch(16, np.random.default_rng(0))
    assert inputs.shape == (16, 11, 9) and targets.shape == (16, 11, 8) and mask.shape == (16, 11)
    np.testing.assert_array_equal(targets[:, 6:], inputs[:, :5, :8])
    assert set(np.unique(inputs[:, :5, :8])) == {0.0, 1.0}


def test_repeat_copy_batch_repeats_the_inputs():
    task = RepeatCopyTask(width=4, length=3, repeats=2)
    inputs, targets, mask = task.batch(8, np.random.default_rng(0))
    assert inputs.shape == (8, 11, 6) and targets.shape == (8, 11, 5)
    np.testing.assert_array_equal(targets[:, 4:7, :4], inputs[:, :3, :4])
    np.testing.assert_array_equal(targets[:, 7:10, :4], inputs[:, :3, :4])
    np.testing.assert_array_equal(targets[:, :, 4].sum(axis=1), np.ones(8))
    assert mask.sum(axis=1).tolist() == [7.0] * 8


def test_varying_lengths_are_padded_with_mask_zero():
    task = CopyTask(width=8, length=6, vary_length=True)
    inputs, targets, mask = task.batch(64, np.random.default_rng(1))
    assert inputs.shape[1] == 13
    lengths = mask.sum(axis=1)
    assert lengths.min() < 6 and lengths.max() == 6
    for b in range(64):
        n = int(lengths[b])
        assert inputs[b, n, 8] == 1.0  # delimiter right after the n bit vectors
        assert not inputs[b, 2 * n + 1 :].any() and not mask[b, 2 * n + 1 :].any()


def test_same_rng_seed_gives_same_batch():
    task = RepeatCopyTask(length=3, repeats=2)
    a = task.batch(4, np.random.default_rng(9))
    b = task.batch(4, np.random.default_rng(9))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_bit_errors_count_wrong_bits_inside_the_mask_only():
    inputs, targets, mask = CopyTask(width=8, length=4).batch(3, np.random.default_rng(0))
    logits = np.where(targets > 0.5, 5.0, -5.0)
    assert bit_errors(logits, targets, mask).tolist() == [0, 0, 0]
    logits[0, 6, 2] *= -1  # inside the mask
    logits[1, 6, :] *= -1  # a whole vector: 8 bits
    logits[2, 1, 0] *= -1  # before the delimiter: not counted
    assert bit_errors(logits, targets, mask).tolist() == [1, 8, 0]
    assert bit_errors(1 / (1 + np.exp(-logits)), targets, mask, from_logits=False)[1] == 8


def test_copy_curriculum_grows_below_threshold_only():
    task = CopyTask(length=1)
    cur = Curriculum(task, threshold=0.15, min_sequences=4)
    assert not cur.observe(np.full(4, 0.15))  # at the threshold: not solved
    assert task.length == 1 and cur.last_error == pytest.approx(0.15)
    assert cur.observe(np.array([0.0, 0.0, 0.5, 0.0]))  # mean 0.125
    assert task.length == 2 and cur.solved == [(1,)] and cur.solved_length == 1


def test_curriculum_waits_for_min_sequences():
    task = CopyTask(length=1)
    cur = Curriculum(task, min_sequences=10)
    assert not cur.observe(0.0, sequences=6)
    assert task.length == 1 and math.isnan(cur.last_error)
    assert cur.observe(1.0, sequences=6)  # 1 bit over 12 sequences
    assert task.length == 2


def test_curriculum_needs_a_count_for_totals():
    with pytest.raises(ValueError, match="sequences"):
        Curriculum(CopyTask()).observe(3.0)


def test_repeat_copy_curriculum_alternates_length_and_repeats():
    task = RepeatCopyTask(length=1, repeats=1)
    cur = Curriculum(task, min_sequences=1)
    levels = [task.level]
    for _ in range(4):
        assert cur.observe(np.zeros(1))
        levels.append(task.level)
    assert levels == [(1, 1), (2, 1), (2, 2), (3, 2), (3, 3)]
    assert cur.solved_length == 3 * 2  # the largest solved level, (3, 2), writes N * R vectors


def test_solved_length_is_zero_before_any_success():
    assert Curriculum(CopyTask()).solved_length == 0


def stream_rows(stream: EpisodeStream, windows: list[int]) -> tuple[np.ndarray, ...]:
    parts = [stream.next_window(t) for t in windows]
    return tuple(np.concatenate(p, axis=1) for p in zip(*parts, strict=True))


def test_stream_windows_have_shapes_and_dtypes():
    task = RepeatCopyTask(width=8, length=2, repeats=2)
    x, y, m, r = EpisodeStream(task, batch_size=5, seed=0).next_window(3)
    assert x.shape == (5, 3, 10) and y.shape == (5, 3, 9)
    assert m.shape == r.shape == (5, 3)
    assert {a.dtype for a in (x, y, m, r)} == {np.dtype(np.float32)}


def test_stream_does_not_depend_on_window_size():
    task = CopyTask(length=3)
    a = stream_rows(EpisodeStream(task, 4, seed=2), [3] * 10)
    b = stream_rows(EpisodeStream(task, 4, seed=2), [5, 2, 7, 1, 15])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_stream_is_a_sequence_of_valid_episodes():
    task = CopyTask(width=8, length=3)
    stream = EpisodeStream(task, batch_size=6, seed=5)
    x, y, m, r = stream_rows(stream, [4] * 20)
    for b in range(6):
        starts = np.flatnonzero(r[b])
        assert not m[b, : starts[0]].any()  # the idle prefix counts for nothing
        for s in starts[:-1]:
            np.testing.assert_array_equal(y[b, s + 4 : s + 7], x[b, s : s + 3, :8])
            np.testing.assert_array_equal(m[b, s : s + 7], [0, 0, 0, 0, 1, 1, 1])
        assert np.all(np.diff(starts) == 7)
    assert stream.episodes_started == r.sum()


def test_stream_rows_are_desynchronised():
    _, _, _, r = EpisodeStream(CopyTask(length=5), batch_size=16, seed=0).next_window(11)
    first_starts = {int(np.flatnonzero(row)[0]) for row in r}
    assert len(first_starts) > 1


def test_stream_follows_curriculum_growth():
    task = CopyTask(length=2)
    stream = EpisodeStream(task, batch_size=2, seed=0, desync=False)
    stream.next_window(5)  # exactly one episode of length 5 per row
    task.length = 4
    _, _, m, r = stream.next_window(9)
    np.testing.assert_array_equal(r[:, 0], [1, 1])
    assert m.sum(axis=1).tolist() == [4.0, 4.0]


def test_same_seed_gives_same_stream_and_rows_differ():
    a = EpisodeStream(CopyTask(length=4), 3, seed=8).next_window(20)
    b = EpisodeStream(CopyTask(length=4), 3, seed=8).next_window(20)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0][0], a[0][1])
