"""The training loop on a tiny corpus: it learns, resumes exactly, stops cleanly, refuses bad runs."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scratchrnn.lm.checkpoint import CHECKPOINT_VERSION, load_checkpoint, load_model
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.evaluation import evaluate_checkpoint
from scratchrnn.lm.rundir import read_run, resume_config
from scratchrnn.lm.schedule import learning_rate
from scratchrnn.lm.train import Trainer, TrainingDiverged, train


def tiny(corpus, out, **kw) -> TrainConfig:
    settings = dict(
        data=corpus, out=str(out), embedding_dim=8, hidden_size=24, batch_size=4, seq_len=8,
        max_steps=40, time_budget=None, warmup_steps=5, lr=1e-2, eval_interval=10, eval_streams=4,
        log_interval=1, sample_length=20, progress=False,
    )
    settings.update(kw)
    return TrainConfig(**settings)


def records(run_dir, key):
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return {r["step"]: r[key] for r in map(json.loads, lines) if key in r}


def test_a_tiny_run_learns(corpus, tmp_path):
    result = train(tiny(corpus, tmp_path / "run", max_steps=120, eval_interval=40))
    train_losses = records(tmp_path / "run", "train_loss")
    val_losses = records(tmp_path / "run", "val_loss")
    assert math.log(60) - 0.5 < train_losses[1] < math.log(60) + 0.5  # ≈ uniform over the vocabulary
    assert result.step == 120 and list(val_losses) == [40, 80, 120]
    assert val_losses[120] < val_losses[40] < train_losses[1] - 0.7
    assert result.val_loss == val_losses[120]
    assert result.chars_per_s > 0 and result.interrupted is None
    names = sorted(os.listdir(tmp_path / "run"))
    assert names == ["best.pt", "checkpoint.pt", "config.json", "log.jsonl", "loss.png", "samples.txt"]
    assert (tmp_path / "run" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # eval on the checkpoint reproduces the run's own validation loss
    loss, count = evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert loss == pytest.approx(result.val_loss, rel=1e-6) and count > 500


def test_checkpoint_contents(corpus, tmp_path):
    train(tiny(corpus, tmp_path, max_steps=10))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["format"] == "scratchrnn.charlm" and ckpt["version"] == CHECKPOINT_VERSION
    assert ckpt["step"] == 10 and ckpt["model_config"]["hidden_size"] == 24
    assert ckpt["train_config"]["lr"] == 1e-2 and isinstance(ckpt["vocab"], str)
    assert ckpt["rng"].dtype == torch.uint8 and ckpt["hidden"].shape == (1, 4, 24)
    assert set(ckpt["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    model, vocab, _ = load_model(tmp_path / "checkpoint.pt")
    assert len(vocab) == model.vocab_size and not model.training
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # no temp files left behind


def _interrupt_at(monkeypatch, at_step: int) -> None:
    """Deliver a real SIGINT to this process while the loop is in step ``at_step``."""
    original = Trainer.train_step

    def train_step(self, *args):
        if self.step + 1 == at_step:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize("kw", [{}, dict(num_layers=2, dropout=0.3, optimizer="adamw")])
def test_resume_equals_an_uninterrupted_run(corpus, tmp_path, monkeypatch, kw):
    straight = train(tiny(corpus, tmp_path / "a", **kw))
    _interrupt_at(monkeypatch, 17)
    first = train(tiny(corpus, tmp_path / "b", **kw))
    assert first.interrupted == "SIGINT" and first.step == 17
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 17
    resumed = train(resume_config(tmp_path / "b"), resume=True)
    assert resumed.step == straight.step == 40
    # step for step: the same training losses and the same validation losses, exactly
    assert records(tmp_path / "b", "train_loss") == records(tmp_path / "a", "train_loss")
    assert records(tmp_path / "b", "val_loss") == records(tmp_path / "a", "val_loss")
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def test_resume_can_extend_but_not_change_the_model(corpus, tmp_path):
    train(tiny(corpus, tmp_path, max_steps=10))
    result = train(resume_config(tmp_path, max_steps=20), resume=True)
    assert result.step == 20
    with pytest.raises(ValueError, match="hidden_size cannot change"):
        Trainer(tiny(corpus, tmp_path, hidden_size=32, max_steps=30), resume=True)
    with pytest.raises(ValueError, match="lr cannot change"):
        resume_config(tmp_path, lr=1.0)
    with pytest.raises(FileNotFoundError, match="no run to resume"):
        resume_config(tmp_path / "elsewhere")


def test_refuses_a_directory_that_holds_another_run(corpus, tmp_path):
    train(tiny(corpus, tmp_path, max_steps=10))
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(FileExistsError, match="holds another run"):
        Trainer(tiny(corpus, tmp_path, max_steps=10))
    with pytest.raises(ValueError, match="lr must be > 0"):  # bad settings: nothing touched, even with force
        Trainer(tiny(corpus, tmp_path, lr=0.0), force=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    result = train(tiny(corpus, tmp_path, max_steps=5), force=True)
    assert result.step == 5 and max(records(tmp_path, "train_loss")) <= 5


def test_a_diverging_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    original = Trainer.train_step

    def train_step(self, *args):  # a weight blows up during step 8
        if self.step + 1 == 8:
            with torch.no_grad():
                self.model.head.bias[0] = math.inf
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    with pytest.raises(TrainingDiverged, match=r"the training loss became (nan|inf) at step 8; stop") as err:
        train(tiny(corpus, tmp_path, eval_interval=5))
    assert "the last good checkpoint" in str(err.value) and "(step 5), is kept" in str(err.value)
    model, _, _ = load_model(tmp_path / "checkpoint.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(TrainingDiverged, match="no checkpoint had been saved yet"):
        train(tiny(corpus, tmp_path / "early", eval_interval=10))


def test_the_torch_backend_trains_the_same_model(corpus, tmp_path):
    ours = train(tiny(corpus, tmp_path / "ours", max_steps=5, eval_interval=5))
    theirs = train(tiny(corpus, tmp_path / "torch", max_steps=5, eval_interval=5, backend="torch"))
    a, b = records(tmp_path / "ours", "train_loss"), records(tmp_path / "torch", "train_loss")
    assert a[1] == pytest.approx(b[1], rel=1e-6)  # the same initial weights, the same first loss
    assert all(a[s] == pytest.approx(b[s], rel=1e-4) for s in a)  # then float32 rounding only
    assert ours.val_loss == pytest.approx(theirs.val_loss, rel=1e-4)


def test_learning_rate_schedule():
    c = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(c, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate(c, 9, 0.0) == pytest.approx(1.0)
    assert learning_rate(c, 50, 0.5) == pytest.approx(0.55)
    assert learning_rate(c, 99, 1.0) == pytest.approx(0.1)
    assert learning_rate(c, 99, 1.7) == pytest.approx(0.1)  # past the end: stays at the floor
    lrs = [learning_rate(c, s, s / 100) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_time_budget_stops_the_run(corpus, tmp_path):
    t0 = time.perf_counter()
    result = train(tiny(corpus, tmp_path, max_steps=None, time_budget=1.5, eval_interval=1000))
    assert 1.2 < result.elapsed < 5.0 and time.perf_counter() - t0 < 30  # loose: the machine is shared
    assert records(tmp_path, "lr")[result.step] < 0.2 * 1e-2  # the cosine reached its floor region


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path, sig):
    command = [sys.executable, "-m", "scratchrnn", "train", "--data", corpus, "--out", str(tmp_path),
               "--hidden-size", "16", "--embedding-dim", "4", "--batch-size", "2", "--seq-len", "4",
               "--max-steps", "1000000", "--time-budget", "0", "--eval-interval", "1000000",
               "--no-progress"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "log.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and f"stopped by {sig.name}" in err
    step = load_checkpoint(tmp_path / "checkpoint.pt")["step"]
    assert step >= 10 and f"step {step}," in out


def test_a_checkpoint_written_before_the_package_was_split_still_loads():
    """tests/lm/data/checkpoint-before-the-move.pt was written by scratchrnn train at commit b9e44ce
    (flat modules, before core/lm/apps); the .json beside it holds its logits for a prompt."""
    here = Path(__file__).with_name("data")
    expected = json.loads((here / "checkpoint-before-the-move.json").read_text())
    model, vocab, ckpt = load_model(here / "checkpoint-before-the-move.pt")
    assert ckpt["step"] == expected["step"]
    with torch.no_grad():
        logits, _ = model(vocab.encode(expected["text"]).unsqueeze(1))
    # float32 rounding only: the step loop's GEMM may sum in another order than when it was saved
    torch.testing.assert_close(logits[-1, 0], torch.tensor(expected["last_logits"]), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Reliability (issue 9): --force, paths, resume's meaning, failures that leave nothing behind.
# --------------------------------------------------------------------------------------------


def _diverge_at(monkeypatch, at_step: int) -> None:
    original = Trainer.train_step

    def train_step(self, *args):
        if self.step + 1 == at_step:
            with torch.no_grad():
                self.model.head.bias[0] = math.nan
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_step", train_step)


def run_files(path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir())}


def test_force_replaces_the_old_run_only_once_the_new_one_has_a_checkpoint(corpus, tmp_path, monkeypatch):
    train(tiny(corpus, tmp_path, max_steps=10))
    before = run_files(tmp_path)
    _diverge_at(monkeypatch, 2)  # the new run fails before its first checkpoint
    with pytest.raises(TrainingDiverged, match="the run directory is left as it was before"):
        train(tiny(corpus, tmp_path, max_steps=10, seed=1), force=True)
    assert run_files(tmp_path) == before
    monkeypatch.undo()
    with pytest.raises(ValueError, match="seed must be an integer from 0 to"):
        train(tiny(corpus, tmp_path, seed=99999999999999999999999), force=True)
    assert run_files(tmp_path) == before
    train(tiny(corpus, tmp_path, max_steps=10, seed=1), force=True)
    assert run_files(tmp_path)["checkpoint.pt"] != before["checkpoint.pt"]
    assert sorted(os.listdir(tmp_path)) == sorted(before)  # no .replaced, no .lock left


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_directory(corpus, tmp_path, monkeypatch):
    _diverge_at(monkeypatch, 3)
    with pytest.raises(TrainingDiverged, match="no checkpoint had been saved yet"):
        train(tiny(corpus, tmp_path / "runs" / "new"))
    assert os.listdir(tmp_path) == []


def test_paths_are_saved_absolute_so_resume_and_eval_work_from_anywhere(corpus, tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "small.txt").write_text(Path(corpus).read_text())
    monkeypatch.chdir(tmp_path / "a")
    train(tiny("small.txt", "run", max_steps=10))
    saved = load_checkpoint(tmp_path / "a" / "run" / "checkpoint.pt")["train_config"]
    assert saved["data"] == str(tmp_path / "a" / "small.txt") and saved["out"] == str(tmp_path / "a" / "run")
    (tmp_path / "b" / "small.txt").write_text("a different small.txt, which must not be read")
    monkeypatch.chdir(tmp_path / "b")
    loss, _ = evaluate_checkpoint(tmp_path / "a" / "run" / "checkpoint.pt")
    assert loss == pytest.approx(load_checkpoint(tmp_path / "a" / "run" / "checkpoint.pt")["val_loss"])
    resumed = train(resume_config(tmp_path / "a" / "run", max_steps=20), resume=True)
    assert resumed.step == 20
    # the same file named differently is the same data
    config = tiny(str(tmp_path / "a" / ".." / "a" / "small.txt"), tmp_path / "a" / "run", max_steps=30)
    assert train(config, resume=True).step == 30


def test_extending_max_steps_keeps_the_schedule_and_says_so(corpus, tmp_path, caplog):
    train(tiny(corpus, tmp_path, max_steps=10, warmup_steps=2))
    with caplog.at_level(logging.INFO, logger="scratchrnn.lm.schedule"):
        train(resume_config(tmp_path, max_steps=20), resume=True)
    assert "the learning-rate schedule still ends at step 10, as the run began" in caplog.text
    assert "training now stops at step 20" in caplog.text
    lrs = records(tmp_path, "lr")
    floor = 1e-2 * 0.1
    assert all(lrs[s] == pytest.approx(floor) for s in range(11, 21))  # no jump back up the cosine


def test_config_json_says_what_a_resumed_run_continues_with(corpus, tmp_path):
    """A resume that raised --max-steps (or changed another allowed setting) once left config.json
    saying the settings the run began with, while the checkpoint said the new ones."""
    train(tiny(corpus, tmp_path, max_steps=10))
    train(resume_config(tmp_path, max_steps=20, log_interval=5), resume=True)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["train"]["max_steps"] == 20 and written["train"]["log_interval"] == 5
    assert written["train"] == load_checkpoint(tmp_path / "checkpoint.pt")["train_config"]


def test_a_checkpoint_read_before_the_lock_is_used_only_if_it_is_still_the_file(corpus, tmp_path,
                                                                               monkeypatch):
    """Trainer(saved=read_run(...)) does not read the checkpoint again, unless another process
    has rewritten it since (then the state read would be stale: it reads the new one)."""
    train(tiny(corpus, tmp_path, max_steps=10))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: loads.append(1) or real_load(*a, **kw))
    saved = read_run(tmp_path, max_steps=20)
    assert len(loads) == 1 and saved.config.max_steps == 20 and saved.checkpoint["step"] == 10
    trainer = Trainer(saved.config, resume=True, saved=saved)
    assert len(loads) == 1 and trainer.step == 10
    trainer.run()
    saved = read_run(tmp_path, max_steps=30)
    train(resume_config(tmp_path, max_steps=25), resume=True)  # another process, meanwhile
    loads.clear()
    result = Trainer(saved.config, resume=True, saved=saved).run()
    assert len(loads) == 1 and result.step == 30
    assert records(tmp_path, "train_loss").keys() == set(range(1, 31))


def test_resuming_a_finished_run_says_so(corpus, tmp_path):
    train(tiny(corpus, tmp_path, max_steps=10))
    with pytest.raises(ValueError, match=r"is finished \(step 10, .*\); pass a --max-steps above 10"):
        train(resume_config(tmp_path), resume=True)
    with pytest.raises(ValueError, match=r"is finished \(step 10, .*\); pass a --max-steps above 10"):
        train(resume_config(tmp_path, max_steps=8), resume=True)


def test_a_wrong_shape_hidden_state_is_refused_on_resume(corpus, tmp_path):
    train(tiny(corpus, tmp_path, max_steps=10))
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ckpt["hidden"] = torch.zeros(1, 3, 24)
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    before = run_files(tmp_path)
    with pytest.raises(ValueError, match=r"cannot be resumed: its hidden state is \(1, 3, 24\), "
                                         r"expected \(L, N, H\) = \(1, 4, 24\)"):
        Trainer(resume_config(tmp_path, max_steps=20), resume=True)
    assert run_files(tmp_path) == before


def test_a_model_too_large_for_memory_is_refused_before_it_is_allocated(corpus, tmp_path):
    # the default GRU: W_hh alone is 3H x H = 3e10 floats, 120 GB; with its gradient and Adam's two moments
    with pytest.raises(ValueError, match=r"^H = 100000 \(L = 1, .*\) needs about 4\d\d GB to train"):
        Trainer(tiny(corpus, tmp_path / "run", hidden_size=100_000))
    assert not (tmp_path / "run").exists()


def test_the_log_keeps_normal_permissions_after_a_resume(corpus, tmp_path):
    old = os.umask(0o022)
    try:
        train(tiny(corpus, tmp_path, max_steps=10))
        train(resume_config(tmp_path, max_steps=12), resume=True)  # rewrites log.jsonl atomically
    finally:
        os.umask(old)
    assert {n: oct(stat.S_IMODE(os.stat(tmp_path / n).st_mode)) for n in os.listdir(tmp_path)} == {
        n: "0o644" for n in os.listdir(tmp_path)}


def test_schedule_extend_replans_the_cosine_over_the_new_end(corpus, tmp_path, caplog):
    # Training longer: "keep" (above) trains the new steps at the floor; "extend" goes back up the
    # cosine to where a run planned to the new end would be, and decays to the floor at that end.
    c = tiny(corpus, tmp_path, max_steps=10, warmup_steps=2)
    train(c)
    with caplog.at_level(logging.INFO, logger="scratchrnn.lm.schedule"):
        train(resume_config(tmp_path, max_steps=30), resume=True, schedule="extend")
    assert "the learning-rate schedule is re-planned to end at step 30 (--schedule extend" in caplog.text
    lrs = records(tmp_path, "lr")
    assert all(lrs[s] == pytest.approx(learning_rate(c, s - 1, (s - 1) / 30)) for s in range(11, 31))
    assert lrs[11] > 5 * lrs[10] and lrs[30] == pytest.approx(1e-2 * 0.1, rel=0.05)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["schedule"] == {"max_steps": 30, "time_budget": None}
    with pytest.raises(ValueError, match="needs --resume"):
        train(tiny(corpus, tmp_path / "new"), schedule="extend")


def test_the_clock_saved_is_the_clock_reported_and_a_finished_budget_names_what_to_raise(corpus, tmp_path):
    # The last evaluation once counted in the clock after the checkpoint was saved: the run
    # printed 600.7 s, saved 599.x, and a resume trained one more step with exit status 0.
    result = train(tiny(corpus, tmp_path, max_steps=100_000, time_budget=1.0, eval_interval=1_000_000))
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["elapsed"] == result.elapsed and saved["step"] == result.step and saved["finished"]
    for given in ({}, {"max_steps": 200_000}):  # the time budget is what ended it, not the steps
        with pytest.raises(ValueError, match=r"is finished .*; pass a --time-budget above [0-9.]+ \(seconds; "
                           r"0: none\) with --resume") as err:
            train(resume_config(tmp_path, **given), resume=True)
        assert "--max-steps" not in str(err.value)
