"""The checkpoint format and the file primitives under it: atomic writes with normal permissions,
a full disk said plainly, bounded reads of regular files only, and models that must be whole."""

from __future__ import annotations

import errno
import os
import stat

import pytest
import torch

from scratchrnn.lm import files
from scratchrnn.lm.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from scratchrnn.lm.files import DiskFullError, atomic_write, read_regular
from scratchrnn.lm.model import CharRNN


def model_state(vocab: str = "abc", hidden_size: int = 4) -> dict:
    torch.manual_seed(0)
    model = CharRNN(len(vocab), embedding_dim=2, hidden_size=hidden_size)
    return {"model_config": model.config.to_dict(), "train_config": {}, "vocab": vocab,
            "model": model.state_dict(), "step": 3}


def test_save_and_load(tmp_path):
    save_checkpoint(tmp_path / "c.pt", model_state())
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["version"] == CHECKPOINT_VERSION and ckpt["step"] == 3
    model, vocab, _ = load_model(tmp_path / "c.pt")
    assert vocab.chars == "abc" and model.vocab_size == 3 and not model.training
    assert os.listdir(tmp_path) == ["c.pt"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_keep_the_permissions_of_an_ordinary_file(tmp_path, umask):
    """mkstemp makes 0600 files; a checkpoint others may read is written 0666 less the umask."""
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "x", b"data")
        save_checkpoint(tmp_path / "c.pt", model_state())
    finally:
        os.umask(old)
    for name in ("x", "c.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name


def test_a_full_disk_keeps_the_old_file_and_says_so(tmp_path, monkeypatch):
    atomic_write(tmp_path / "c.pt", b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(DiskFullError, match=r"no space left on the device to write .*c\.pt"):
        save_checkpoint(tmp_path / "c.pt", model_state())
    assert (tmp_path / "c.pt").read_bytes() == b"old" and os.listdir(tmp_path) == ["c.pt"]


def test_checkpoints_with_non_finite_weights_are_refused(tmp_path):
    for value in (float("nan"), float("inf")):
        state = model_state()
        state["model"]["rnn.weight_hh_l0"][1, 2] = value
        save_checkpoint(tmp_path / "bad.pt", state)
        expected = r"non-finite weights: 1 NaN or infinite value\(s\) in rnn\.weight_hh_l0"
        with pytest.raises(ValueError, match=expected):
            load_model(tmp_path / "bad.pt")


def test_a_vocabulary_that_does_not_fit_the_model_is_refused(tmp_path):
    state = model_state()
    state["vocab"] = "abcd"  # four characters, a model of three outputs
    save_checkpoint(tmp_path / "c.pt", state)
    with pytest.raises(ValueError, match="vocabulary has 4 characters but the model predicts 3"):
        load_model(tmp_path / "c.pt")
    state = model_state()
    state["model_config"]["hidden_size"] = 5  # the weights are for H = 4: one line, not a dump
    save_checkpoint(tmp_path / "c.pt", state)
    expected = r"inconsistent model: rnn.weight_ih_l0 is \(4, 2\), and model_config says \(5, 2\)"
    with pytest.raises(ValueError, match=expected) as err:
        load_model(tmp_path / "c.pt")
    assert "\n" not in str(err.value)


def test_special_files_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ValueError, match=r"is a FIFO .*, not a checkpoint file"):
        load_checkpoint(tmp_path / "fifo")  # would block forever in open() without O_NONBLOCK
    with pytest.raises(ValueError, match="is a character device, not a text file"):
        read_regular("/dev/zero", "a text file", 100)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_a_loop_of_symbolic_links_is_named_as_such(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(OSError, match="is a loop of symbolic links"):
        load_checkpoint(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_reads_are_bounded(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(ValueError, match="is 101 bytes; the limit for a text file is 100 bytes"):
        read_regular(tmp_path / "big", "a text file", 100)
    assert read_regular(tmp_path / "big", "a text file", 101) == b"x" * 101
