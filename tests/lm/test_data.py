"""Corpus loading, the vocabulary, the 90/10 split and the truncated-BPTT stream batches."""

from __future__ import annotations

import logging

import pytest
import torch

from scratchrnn.lm.data import (
    Corpus,
    StreamBatches,
    Vocab,
    default_corpus_path,
    load_corpus,
    read_text,
    split_text,
)


def test_bundled_corpus_is_tiny_shakespeare():
    text = read_text()
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:")
    corpus = load_corpus()
    assert len(corpus.vocab) == 65  # every character of the text occurs in its first 90 %
    assert len(corpus.train) == 1_003_854 and len(corpus.val) == 111_540
    assert read_text(default_corpus_path()) == text


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError, match="is a directory"):
        read_text(tmp_path)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_text(bad)


def test_split_is_first_90_percent_then_last_10():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = split_text(text)
    assert (len(train), len(val)) == (900, 100)
    assert train + val == text


def test_vocab_round_trip_and_unknown_characters():
    vocab = Vocab.from_text("hello world")
    assert vocab.chars == " dehlorw"
    ids = vocab.encode("low")
    assert ids.dtype == torch.long and vocab.decode(ids) == "low"
    with pytest.raises(ValueError, match=r"1 character\(s\) not in the model's vocabulary: 'z'"):
        vocab.encode("z")
    assert vocab.unknown("xyz lo") == ["x", "y", "z"]
    kept, dropped = vocab.encode_known("hex")
    assert vocab.decode(kept) == "he" and dropped == 1
    with pytest.raises(ValueError, match="repeated"):
        Vocab("aa")
    with pytest.raises(ValueError, match="empty"):
        Vocab("")


def test_vocabulary_comes_from_the_training_part(caplog):
    text = "ab" * 45 + "abz" + "ab" * 3 + "q"  # 100 characters; z and q only in the last 10
    with caplog.at_level(logging.WARNING):
        corpus = Corpus.from_text(text)
    assert corpus.vocab.chars == "ab"
    assert len(corpus.val) == 10 - 2  # z and q dropped, and said so
    assert "2 character(s) outside the vocabulary were dropped" in caplog.text


@pytest.mark.parametrize(("L", "N", "T"), [(101, 4, 5), (1000, 7, 3), (50, 1, 1), (23, 2, 11)])
def test_stream_batches_are_contiguous_streams(L, N, T):
    data = torch.arange(L)
    batches = StreamBatches(data, N, T)
    S = (L - 1) // N
    assert batches.stream_len == S and len(batches) == S // T
    for k in range(len(batches)):
        x, y = batches[k]
        assert x.shape == y.shape == (T, N) and x.is_contiguous() and y.is_contiguous()
        t = torch.arange(T).unsqueeze(1)
        n = torch.arange(N)
        assert torch.equal(x, data[n * S + k * T + t])  # stream n, characters k·T … k·T + T − 1
        assert torch.equal(y, x + 1)  # targets: the next character
        if k > 0:  # stream n of batch k continues where batch k − 1 stopped
            assert torch.equal(x[0], batches[k - 1][1][-1])
    with pytest.raises(IndexError):
        batches[len(batches)]


def test_chunks_cover_every_predicted_character_once():
    data = torch.arange(103)
    batches = StreamBatches(data, 4, 7)  # S = 25: chunks of 7, 7, 7, 4
    ys = [y for _, y in batches.chunks()]
    assert [len(y) for y in ys] == [7, 7, 7, 4]
    targets = torch.cat(ys).t().reshape(-1)  # stream by stream
    assert torch.equal(targets, torch.arange(1, 4 * 25 + 1))


@pytest.mark.parametrize(("L", "N", "T"), [(0, 2, 3), (1, 1, 1), (10, 4, 3), (64, 8, 8)])
def test_too_short_for_one_batch(L, N, T):
    with pytest.raises(ValueError, match="too short for one batch"):
        StreamBatches(torch.zeros(L, dtype=torch.long), N, T, "the text")


def test_corpus_too_short():
    with pytest.raises(ValueError, match="too short"):
        Corpus.from_text("a")
