"""Fault injection: kill -9 during checkpoint writes, a full disk, two writers on one run
directory, and stop signals while a run starts. Each fault must leave a loadable checkpoint, the
earlier run as it was, or nothing at all — never a half-written file or a lost run.

The processes are real (``python -m scratchrnn`` or a small script); the full disk is a small
tmpfs, mounted only when the tests run as root (CI does), skipped otherwise.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scratchrnn.apps import cli
from scratchrnn.lm.checkpoint import load_checkpoint
from scratchrnn.lm.rundir import LOCK_NAME, REPLACED

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="flock, /proc, tmpfs")

TINY = ["--hidden-size", "16", "--embedding-dim", "4", "--batch-size", "4", "--seq-len", "8",
        "--eval-streams", "4", "--sample-length", "0", "--time-budget", "0", "--no-progress"]


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def scratchrnn(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "scratchrnn", *argv], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def old_run(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("old") / "run"
    assert cli.main(["train", "--data", corpus, "--out", str(out), *TINY, "--max-steps", "4",
                     "--eval-interval", "2"]) == 0
    return out


KILLED_WRITER = textwrap.dedent("""
    import os, random, signal, sys, time
    import torch
    from scratchrnn.lm.checkpoint import load_checkpoint, save_checkpoint
    path, rounds = sys.argv[1], int(sys.argv[2])
    state = {"model_config": {"vocab_size": 2}, "train_config": {}, "vocab": "ab", "step": 0,
             "model": {"w": torch.randn(256, 256)}}  # 256 kB: a write takes a while
    random.seed(0)
    last = -1
    for r in range(rounds):
        pid = os.fork()
        if pid == 0:  # the writer: checkpoint after checkpoint until it is killed
            k = last + 1
            while True:
                save_checkpoint(path, {**state, "step": k})
                k += 1
        time.sleep(random.uniform(0.005, 0.05))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if os.path.exists(path):
            step = load_checkpoint(path)["step"]  # whole, whatever instant the kill came at
            assert step >= last, (step, last)
            last = step
    print(last)
""")


def test_kill_9_during_checkpoint_writes_never_leaves_a_bad_checkpoint(tmp_path):
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "checkpoint.pt"), "12"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0  # writes did complete between the kills


def test_kill_9_during_training_then_resume(corpus, tmp_path):
    """A killed run leaves a stale lock and perhaps a temp file: neither stops the resume."""
    out = tmp_path / "run"
    proc = scratchrnn("train", "--data", corpus, "--out", str(out), *TINY, "--max-steps", "1000000",
                      "--eval-interval", "1")  # a checkpoint every step
    wait_for(lambda: (out / "checkpoint.pt").exists())
    time.sleep(0.3)
    proc.kill()
    proc.communicate()
    step = load_checkpoint(out / "checkpoint.pt")["step"]
    assert (out / LOCK_NAME).exists()  # left behind by the killed holder, its flock gone with it
    assert cli.main(["train", "--out", str(out), "--resume", "--max-steps", str(step + 2)]) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == step + 2
    assert not [n for n in os.listdir(out) if n.startswith(".")]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` up but for about ``leave`` bytes."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(disk / "filler", max(0, os.path.getsize(disk / "filler") - leave))


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(corpus, small_disk, capsys):
    out = small_disk / "run"
    assert cli.main(["train", "--data", corpus, "--out", str(out), *TINY, "--max-steps", "2",
                     "--eval-interval", "2"]) == 0
    before = contents(out)
    fill(small_disk, leave=8192)  # room for the log's records, not for a checkpoint
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--max-steps", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device to write" in err, err
    assert "its previous version, if any, is kept" in err
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 2  # the last good one, whole
    assert contents(out)["checkpoint.pt"] == before["checkpoint.pt"]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    # a new run on the full disk leaves nothing
    fill(small_disk, leave=0)
    assert cli.main(["train", "--data", corpus, "--out", str(small_disk / "new"), *TINY,
                     "--max-steps", "2"]) == 2
    assert "no space left" in capsys.readouterr().err and not (small_disk / "new").exists()


def test_concurrent_writers_one_run_directory(corpus, old_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(old_run, out)
    first = scratchrnn("train", "--out", str(out), "--resume", "--max-steps", "1000000", "--eval-interval",
                       "1000000")
    wait_for(lambda: (out / "log.jsonl").read_text().count("\n") > 3)  # the first run's two, and more
    new = ["--data", corpus, *TINY, "--max-steps", "2"]
    for argv in (["--resume", "--max-steps", "2000000"], ["--force", *new], new):
        capsys.readouterr()
        assert cli.main(["train", "--out", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert err == (f"scratchrnn train: error: {out} is in use by another scratchrnn process "
                       f"(PID {first.pid}); wait for it to finish, or stop it, or choose another --out\n")
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM, err
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(a < b for a, b in itertools.pairwise(steps))  # one writer: no record twice, none mixed
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_during_start_up_is_one_line_and_touches_nothing(old_run, tmp_path, sig):
    """--force over a run, on the bundled corpus: the signal comes while the text is read and
    encoded (the -v debug line says when that begins), before anything in the run is touched."""
    out = tmp_path / "run"
    shutil.copytree(old_run, out)
    before = contents(out)
    proc = scratchrnn("-v", "train", "--out", str(out), "--force", *TINY, "--max-steps", "2")
    seen = []
    while not (seen and seen[-1].startswith("reading and encoding the bundled corpus")):
        line = proc.stderr.readline()
        assert line, f"the process ended first: {''.join(seen)}"
        seen.append(line)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig and "Traceback" not in err, err
    assert err.splitlines()[-1] == f"scratchrnn train: stopped by {sig.name}"
    assert contents(out) == before and not (out / REPLACED).exists() and not (out / LOCK_NAME).exists()
