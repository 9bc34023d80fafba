"""Corpus loading, the vocabulary, the 90/10 split and the truncated-BPTT stream batches."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from scratchrnn.lm import data
from scratchrnn.lm.data import (
    Corpus,
    StreamBatches,
    Vocab,
    default_corpus_path,
    load_corpus,
    read_text,
    resolve_data,
    same_data,
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


def test_a_byte_order_mark_is_dropped(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeffhello".encode())
    assert read_text(tmp_path / "bom.txt") == "hello"
    assert Vocab.from_text(read_text(tmp_path / "bom.txt")).chars == "ehlo"


def test_only_regular_files_of_bounded_size_are_read(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match=r"is a FIFO \(named pipe\), not a text file"):
        read_text(tmp_path / "fifo")  # without the check: blocks forever waiting for a writer
    with pytest.raises(ValueError, match="is a character device, not a text file"):
        read_text("/dev/zero")  # without the check: reads until MemoryError
    monkeypatch.setattr(data, "MAX_TEXT_BYTES", 10)
    (tmp_path / "big.txt").write_text("x" * 11)
    with pytest.raises(ValueError, match="is 11 bytes; the limit for a text file is 10 bytes"):
        read_text(tmp_path / "big.txt")


def test_a_loop_of_symbolic_links_is_not_a_missing_file(tmp_path):
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    with pytest.raises(OSError, match="is a loop of symbolic links"):
        read_text(tmp_path / "loop")


def test_the_same_file_by_other_names(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("x")
    os.symlink(tmp_path / "a.txt", tmp_path / "link.txt")
    os.link(tmp_path / "a.txt", tmp_path / "hard.txt")
    monkeypatch.chdir(tmp_path)
    assert resolve_data("a.txt") == str(tmp_path / "a.txt") and resolve_data(None) is None
    for name in ("a.txt", "./a.txt", "link.txt", "hard.txt", str(tmp_path / "a.txt")):
        assert same_data(str(tmp_path / "a.txt"), name), name
    assert same_data(None, default_corpus_path()) and not same_data("a.txt", "missing.txt")


def test_generation_starts_from_a_newline_or_the_first_character():
    assert Vocab("\nab").start == "\n" and Vocab("ab").start == "a"
