"""The run directory's policy (new, force, resume), its lock, and resuming's rules for settings."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch

from scratchrnn.lm.checkpoint import save_checkpoint
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.model import CharRNN
from scratchrnn.lm.rundir import (
    LOCK_NAME,
    REPLACED,
    REPLACING,
    RunDir,
    RunInUseError,
    read_log,
    resume_config,
)


def old_run(path) -> dict[str, bytes]:
    """A directory that holds a (fake) run and a note of the user's; its files' contents."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoint.pt", "config.json", "log.jsonl", "best.pt"):
        (path / name).write_bytes(f"old {name}".encode())
    return contents(path)


def contents(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_a_new_run_creates_its_directory_and_a_failure_removes_it(tmp_path):
    run = RunDir(tmp_path / "a" / "b")
    run.open("new")
    assert (tmp_path / "a" / "b" / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    run.write_config({"x": 1})
    run.log({"step": 1})
    run.abort()  # failed before a checkpoint: nothing of it stays, not even the directories
    run.close()
    assert os.listdir(tmp_path) == []


def test_a_run_that_started_keeps_its_directory(tmp_path):
    run = RunDir(tmp_path / "r")
    run.open("new")
    run.log({"step": 1})
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"ckpt")
    run.commit()
    run.abort()  # after commit: nothing to undo
    run.close()
    assert sorted(os.listdir(tmp_path / "r")) == ["checkpoint.pt", "log.jsonl"]
    assert read_log(tmp_path / "r") == [{"step": 1}]


@pytest.mark.parametrize("mode", ["new", "force"])
def test_directories_that_are_not_runs_are_refused(tmp_path, mode):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"is not empty and holds no scratchrnn run \(notes.txt\)"):
        RunDir(tmp_path).open(mode)
    with pytest.raises(ValueError, match="is the filesystem root"):
        RunDir("/").open(mode)
    with pytest.raises(ValueError, match="is the home directory"):
        RunDir(os.path.expanduser("~")).open(mode)
    with pytest.raises(NotADirectoryError, match="exists and is not a directory"):
        RunDir(tmp_path / "notes.txt").open(mode)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_new_refuses_a_run_and_resume_needs_one(tmp_path):
    before = old_run(tmp_path / "r")
    with pytest.raises(FileExistsError, match=r"holds another run; pass --resume .* or --force"):
        RunDir(tmp_path / "r").open("new")
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        RunDir(tmp_path / "empty").open("resume")
    assert contents(tmp_path / "r") == before and not (tmp_path / "empty").exists()


def test_force_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path):
    before = old_run(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")  # not a run file: left alone
    run = RunDir(tmp_path)
    run.open("force")
    assert sorted(os.listdir(tmp_path / REPLACED)) == ["best.pt", "checkpoint.pt", "config.json", "log.jsonl"]
    run.log({"step": 1})
    run.abort()  # e.g. a NaN at step 2: the old run comes back as it was
    run.close()
    assert contents(tmp_path) == {**before, "notes.txt": b"mine"}
    run = RunDir(tmp_path)
    run.open("force")
    (tmp_path / "checkpoint.pt").write_bytes(b"new")
    run.commit()  # the new run's first checkpoint: now the old one goes
    run.close()
    assert contents(tmp_path) == {"checkpoint.pt": b"new", "notes.txt": b"mine"}


def test_a_killed_force_is_undone_by_the_next_open(tmp_path):
    """A kill -9 between moving the old run aside and the new run's first checkpoint."""
    before = old_run(tmp_path)
    (tmp_path / REPLACED).mkdir()
    for name in before:
        os.replace(tmp_path / name, tmp_path / REPLACED / name)
    (tmp_path / "config.json").write_text("the new run's")
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    run = RunDir(tmp_path)
    run.open("resume")
    run.close()
    assert contents(tmp_path) == before  # the old run is back; the temp file is gone


def test_the_lock_names_its_holder_and_a_dead_holder_does_not_block(tmp_path):
    first = RunDir(tmp_path)
    first.open("new")
    with pytest.raises(RunInUseError, match=rf"in use by another scratchrnn process \(PID {os.getpid()}\)"):
        RunDir(tmp_path).open("new")
    first.close()
    assert not (tmp_path / LOCK_NAME).exists()
    # a lock file left by a process that died: its flock died with it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout
    (tmp_path / LOCK_NAME).write_text(dead)
    run = RunDir(tmp_path)
    run.open("new")
    assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()}\n"
    run.close()


def saved_run(tmp_path, data) -> str:
    out = tmp_path / "run"
    out.mkdir()
    config = TrainConfig(data=str(data), out=str(out), hidden_size=64, batch_size=16, eval_interval=6)
    model = CharRNN(2, config.embedding_dim, config.hidden_size)  # a checkpoint must be whole to resume
    save_checkpoint(out / "checkpoint.pt", {
        "model_config": model.config.to_dict(), "train_config": dataclasses.asdict(config), "vocab": "ab",
        "model": model.state_dict(), "step": 6, "optimizer": {}, "elapsed": 1.0,
        "rng": torch.get_rng_state(), "hidden": None, "best_val": math.inf})
    return str(out)


def test_resume_accepts_the_same_settings_and_names_a_change(tmp_path, monkeypatch):
    data = tmp_path / "small.txt"
    data.write_text("text")
    out = saved_run(tmp_path, data)
    # the original command repeated: equal values, the same file by another name
    os.symlink(data, tmp_path / "link.txt")
    monkeypatch.chdir(tmp_path)
    for name in (str(data), "small.txt", "./small.txt", "link.txt"):
        config = resume_config(out, data=name, hidden_size=64, batch_size=16, max_steps=20)
        assert config.max_steps == 20 and config.data == str(data)
    # a flag given with the default's value is honoured (500 is eval_interval's default)
    assert resume_config(out, eval_interval=500).eval_interval == 500
    assert resume_config(out).eval_interval == 6
    with pytest.raises(ValueError, match=r"^batch_size, hidden_size cannot change when resuming the run in .*"
                       r"\(batch_size: the run has 16, got 32; hidden_size: the run has 64, got 640\)"):
        resume_config(out, hidden_size=640, batch_size=32)
    (tmp_path / "other.txt").write_text("text")
    with pytest.raises(ValueError, match="data cannot change"):
        resume_config(out, data="other.txt")


def test_a_force_killed_while_moving_the_old_run_aside_loses_none_of_it(tmp_path):
    """Killed after some of the old run's files were moved aside and before the rest: the next
    open puts them back beside the others (once, the half-moved run was taken for a finished move
    and the files not yet moved were deleted)."""
    before = old_run(tmp_path)
    moving = tmp_path / REPLACING
    moving.mkdir()
    os.replace(tmp_path / "checkpoint.pt", moving / "checkpoint.pt")  # the kill came after this one
    run = RunDir(tmp_path)
    run.open("resume")
    run.close()
    assert contents(tmp_path) == before and not moving.exists()
