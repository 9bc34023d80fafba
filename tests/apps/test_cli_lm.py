"""`scratchrnn train | sample | eval`: the happy path, and every bad input of the issue as one
clear error line and exit status 2, with nothing overwritten."""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scratchrnn.apps import cli

TINY = ["--hidden-size", "16", "--embedding-dim", "4", "--batch-size", "4", "--seq-len", "8",
        "--max-steps", "12", "--time-budget", "0", "--eval-interval", "6", "--eval-streams", "4",
        "--sample-length", "10", "--no-progress"]


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """A trained tiny run directory."""
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "--data", corpus, "--out", str(out), "--force", *TINY]) == 0
    return out


def fails(capsys, argv, match: str) -> str:
    """Run the CLI; check exit status 2 and one line on stderr that contains ``match``."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"scratchrnn {argv[0]}: error: ") and match in lines[0], lines[0]
    assert "Traceback" not in err
    return lines[0]


def test_train_sample_eval(run, capsys):
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "checkpoint.pt", "config.json", "log.jsonl", "loss.png", "samples.txt"]
    ckpt = str(run / "checkpoint.pt")
    capsys.readouterr()
    sample = ["sample", "--checkpoint", ckpt, "--prompt", "The ", "--length", "80", "--seed"]
    assert cli.main([*sample, "3"]) == 0
    first = capsys.readouterr().out
    assert cli.main([*sample, "3"]) == 0
    assert capsys.readouterr().out == first  # the same seed, the same text
    assert cli.main([*sample, "4"]) == 0
    assert capsys.readouterr().out != first
    vocab = torch.load(ckpt, weights_only=True)["vocab"]
    text = first[:-1]  # print's newline
    assert text.startswith("The ") and len(text) == 84 and set(text) <= set(vocab)
    assert cli.main(["eval", "--checkpoint", ckpt]) == 0
    out = capsys.readouterr().out
    assert out.startswith("val loss ") and "nats/char" in out and "bits/char" in out


def test_help_shows_every_default(capsys):
    for command in ("train", "sample", "eval"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        out = capsys.readouterr().out
        assert "(default:" in out
    # flags are grouped as torch-rnn's are
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    for group in ("data:", "model:", "optimisation:", "output:"):
        assert group in out
    assert "--hidden-size HIDDEN_SIZE" in out and "(default: 640)" in out


def test_bad_data_files(capsys, tmp_path):
    out = str(tmp_path / "out")
    fails(capsys, ["train", "--data", str(tmp_path / "missing.txt"), "--out", out, *TINY], "no such file")
    fails(capsys, ["train", "--data", str(tmp_path), "--out", out, *TINY], "is a directory")
    (tmp_path / "bin.txt").write_bytes(b"hello \xff\xfe world")
    fails(capsys, ["train", "--data", str(tmp_path / "bin.txt"), "--out", out, *TINY], "not UTF-8")
    (tmp_path / "empty.txt").write_text("")
    fails(capsys, ["train", "--data", str(tmp_path / "empty.txt"), "--out", out, *TINY], "too short")
    (tmp_path / "short.txt").write_text("to be or not to be")
    fails(capsys, ["train", "--data", str(tmp_path / "short.txt"), "--out", out, *TINY],
          "too short for one batch")
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--hidden-size", "0"], "hidden_size must be a positive integer"),
        (["--num-layers", "-1"], "num_layers must be a positive integer"),
        (["--batch-size", "0"], "batch_size must be a positive integer"),
        (["--seq-len", "-5"], "seq_len must be a positive integer"),
        (["--embedding-dim", "-1"], "embedding_dim must be a non-negative integer"),
        (["--lr", "0"], "lr must be > 0"),
        (["--lr", "-0.1"], "lr must be > 0"),
        (["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
        (["--dropout", "1.5"], "dropout must be in [0, 1)"),
        (["--max-steps", "0", "--time-budget", "0"], "max_steps must be a positive integer"),
        (["--time-budget", "-1"], "time_budget must be a non-negative"),
        (["--clip", "-1"], "clip must be ≥ 0"),
        (["--backend", "jax"], "unknown backend"),
    ],
)
def test_bad_hyper_parameters(capsys, corpus, tmp_path, flags, match):
    fails(capsys, ["train", "--data", corpus, "--out", str(tmp_path / "out"), *TINY, *flags], match)
    assert not (tmp_path / "out").exists()


def test_an_output_directory_that_holds_another_run(capsys, corpus, run):
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    fails(capsys, ["train", "--data", corpus, "--out", str(run), *TINY], "holds another run")
    # a bad flag with --force still touches nothing
    fails(capsys, ["train", "--data", corpus, "--out", str(run), "--force", *TINY, "--lr", "0"], "lr must be")
    fails(capsys, ["train", "--data", corpus, "--out", str(run), "--resume", "--hidden-size", "32"],
          "hidden_size cannot change when resuming")
    fails(capsys, ["train", "--out", str(run), "--resume", "--force"], "exclude each other")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_resume_without_a_run(capsys, tmp_path):
    fails(capsys, ["train", "--out", str(tmp_path), "--resume", *TINY], "no run to resume")


def _bad_checkpoints(run, tmp_path):
    good = (run / "checkpoint.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 40)
    (tmp_path / "text.pt").write_text("not a checkpoint at all\n")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "state_dict.pt")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["version"] = 99
    torch.save(ckpt, tmp_path / "future.pt")
    return [
        (tmp_path / "missing.pt", "no such file"),
        (tmp_path, "is a directory"),
        (tmp_path / "truncated.pt", "not a readable checkpoint"),
        (tmp_path / "garbage.pt", "not a readable checkpoint"),
        (tmp_path / "text.pt", "not a readable checkpoint"),
        (tmp_path / "state_dict.pt", "not a scratchrnn language-model checkpoint"),
        (tmp_path / "future.pt", "format version 99; this scratchrnn reads version 1"),
    ]


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_bad_checkpoints(capsys, run, tmp_path, command):
    for path, match in _bad_checkpoints(run, tmp_path):
        fails(capsys, [command, "--checkpoint", str(path)], match)


def test_resume_from_a_bad_checkpoint(capsys, run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:1000])
    fails(capsys, ["train", "--out", str(out), "--resume"], "not a readable checkpoint")


def test_sample_errors(capsys, run):
    ckpt = str(run / "checkpoint.pt")
    line = fails(capsys, ["sample", "--checkpoint", ckpt, "--prompt", "naïve€"], "not in the model's vocab")
    assert "€" in line
    fails(capsys, ["sample", "--checkpoint", ckpt, "--temperature", "-1"], "must be ≥ 0 (0: greedy)")
    fails(capsys, ["sample", "--checkpoint", ckpt, "--top-k", "0"], "top-k must be a positive integer")
    fails(capsys, ["sample", "--checkpoint", ckpt, "--length", "-1"], "length must be ≥ 0")


def test_eval_on_other_data(capsys, run, corpus, tmp_path):
    assert cli.main(["eval", "--checkpoint", str(run / "checkpoint.pt"), "--data", corpus]) == 0
    assert "val loss" in capsys.readouterr().out
    fails(capsys, ["eval", "--checkpoint", str(run / "checkpoint.pt"), "--data", str(tmp_path / "nope.txt")],
          "no such file")


def test_console_script_error_has_no_traceback(tmp_path):
    """End to end through a real process: exit status 2, one line, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "scratchrnn", "sample", "--checkpoint", str(tmp_path / "none.pt")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"scratchrnn sample: error: no such file: {tmp_path / 'none.pt'}"
    ]


# --------------------------------------------------------------------------------------------
# Reliability (issue 9): what --resume means, and one line for every failure.
# --------------------------------------------------------------------------------------------


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_resume_repeats_the_command_and_honours_every_given_flag(capsys, corpus, run, tmp_path):
    out = copy_of(run, tmp_path)
    again = ["train", "--data", corpus, "--out", str(out), *TINY]
    # the original command plus --resume: equal values are accepted; --eval-interval 500 is the
    # default, and given, so it is honoured
    assert cli.main([*again, "--resume", "--max-steps", "14", "--eval-interval", "500"]) == 0
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 14 and saved["train_config"]["eval_interval"] == 500
    line = fails(capsys, [*again, "--resume", "--max-steps", "16", "--hidden-size", "640"],
                 "hidden_size cannot change when resuming the run in")
    assert "(hidden_size: the run has 16, got 640)" in line
    line = fails(capsys, ["train", "--out", str(out), "--resume"], "is finished (step 14")
    assert "pass a --max-steps above 14 with --resume" in line


def test_an_unknown_train_flag_prints_the_train_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--hiden-size", "3"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage: scratchrnn train ")
    assert "scratchrnn train: error: unrecognized arguments: --hiden-size 3" in err


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--seed", "99999999999999999999999"], "seed must be an integer from 0 to 18446744073709551615"),
        (["--hidden-size", "100000"], "H = 100000 (L = 1, E = 4"),
        (["--optimizer", "sgd", "--weight-decay", "1e300"], "weight_decay must be at most 3.4e+38"),
    ],
)
def test_failures_that_used_to_be_tracebacks(capsys, corpus, tmp_path, flags, match):
    fails(capsys, ["train", "--data", corpus, "--out", str(tmp_path / "out"), *TINY, *flags], match)
    assert not (tmp_path / "out").exists()


def test_dangerous_or_foreign_output_directories(capsys, corpus, tmp_path):
    fails(capsys, ["train", "--data", corpus, "--out", "/", *TINY], "--out / is the filesystem root")
    (tmp_path / "mine.txt").write_text("mine")
    fails(capsys, ["train", "--data", corpus, "--out", str(tmp_path), "--force", *TINY],
          "is not empty and holds no scratchrnn run (mine.txt)")
    assert os.listdir(tmp_path) == ["mine.txt"]


def test_special_and_odd_data_files(capsys, tmp_path):
    out = str(tmp_path / "out")
    os.mkfifo(tmp_path / "fifo")
    fails(capsys, ["train", "--data", str(tmp_path / "fifo"), "--out", out, *TINY], "is a FIFO (named pipe)")
    fails(capsys, ["train", "--data", "/dev/zero", "--out", out, *TINY], "is a character device")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    fails(capsys, ["train", "--data", str(tmp_path / "loop"), "--out", out, *TINY],
          "a loop of symbolic links")
    assert not (tmp_path / "out").exists()


def test_a_byte_order_mark_is_not_a_character(capsys, corpus, tmp_path):
    (tmp_path / "bom.txt").write_text("\ufeff" + Path(corpus).read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "out"
    assert cli.main(["train", "--data", str(tmp_path / "bom.txt"), "--out", str(out), *TINY]) == 0
    assert "\ufeff" not in torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True)["vocab"]


def test_sample_and_demo_bounds(capsys, run):
    fails(capsys, ["sample", "--checkpoint", str(run / "checkpoint.pt"), "--temperature", "1e-40"],
          "temperature must be 0 (greedy) or ≥ 0.0001")
    fails(capsys, ["sample", "--checkpoint", str(run / "checkpoint.pt"), "--seed", "-1"], "--seed must be")
    fails(capsys, ["demo", "--seq-len", "0"], "seq_len must be a positive integer, got 0")


def _tampered(run, tmp_path, change) -> str:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / "tampered.pt")
    return str(tmp_path / "tampered.pt")


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_checkpoints_that_cannot_be_used(capsys, run, tmp_path, command):
    def nan_weight(ckpt):
        ckpt["model"]["rnn.weight_hh_l0"][0, 0] = math.nan

    def extra_character(ckpt):
        ckpt["vocab"] += "\u2603"

    path = _tampered(run, tmp_path, nan_weight)
    fails(capsys, [command, "--checkpoint", path], "holds non-finite weights: 1 NaN or infinite value(s)")
    path = _tampered(run, tmp_path, extra_character)
    fails(capsys, [command, "--checkpoint", path], "characters but the model predicts")


def test_resume_with_a_wrong_shape_hidden_state(capsys, run, tmp_path):
    out = copy_of(run, tmp_path)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    ckpt["hidden"] = ckpt["hidden"][:, :2]
    torch.save(ckpt, out / "checkpoint.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fails(capsys, ["train", "--out", str(out), "--resume", "--max-steps", "20"],
          "cannot be resumed: its hidden state is (1, 2, 16), expected (L, N, H) = (1, 4, 16)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_second_writer_is_told_who_holds_the_run(capsys, corpus, run, tmp_path):
    from scratchrnn.lm.rundir import RunDir

    out = copy_of(run, tmp_path)
    holder = RunDir(out)
    holder.open("resume")
    try:
        fails(capsys, ["train", "--out", str(out), "--resume", "--max-steps", "20"],
              f"is in use by another scratchrnn process (PID {os.getpid()})")
        fails(capsys, ["train", "--data", corpus, "--out", str(out), "--force", *TINY], "is in use")
    finally:
        holder.close()


def test_ctrl_c_during_start_up_is_one_line_and_loses_nothing(capsys, corpus, run, tmp_path, monkeypatch):
    from scratchrnn.lm.train import Trainer

    out = copy_of(run, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(self):
        raise KeyboardInterrupt  # while the model is built: after the old run was moved aside

    monkeypatch.setattr(Trainer, "build", interrupted)
    capsys.readouterr()
    assert cli.main(["train", "--data", corpus, "--out", str(out), "--force", *TINY]) == 130
    assert capsys.readouterr().err == "scratchrnn train: stopped by SIGINT\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_full_disk_is_one_line_and_leaves_nothing(capsys, corpus, tmp_path, monkeypatch):
    from scratchrnn.lm import files

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    fails(capsys, ["train", "--data", corpus, "--out", str(tmp_path / "out"), *TINY],
          "no space left on the device to write")
    assert not (tmp_path / "out").exists()


def test_resume_after_a_killed_force_continues_the_earlier_run(capsys, run, tmp_path, monkeypatch):
    """A --force killed before the new run's first checkpoint left the old run in .replaced/:
    --resume puts it back and carries on from its checkpoint (resume_config once read only the
    top-level checkpoint.pt and said there was no run), read once: moved back, it is the same file."""
    out = tmp_path / "r"
    shutil.copytree(run, out)
    aside = out / ".replaced"
    aside.mkdir()
    for name in ("checkpoint.pt", "best.pt", "config.json", "log.jsonl", "loss.png", "samples.txt"):
        os.replace(out / name, aside / name)
    (out / "config.json").write_text("the killed new run's")
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: loads.append(1) or real_load(*a, **kw))
    assert cli.main(["train", "--out", str(out), "--resume", "--max-steps", "14"]) == 0
    assert "step 14," in capsys.readouterr().out and len(loads) == 1
    monkeypatch.undo()
    assert not aside.exists() and torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 14


def test_resume_reads_the_checkpoint_once_and_rewrites_config_json(capsys, run, tmp_path, monkeypatch):
    """A CLI resume once read checkpoint.pt twice (its settings, then its state), and left
    config.json saying the --max-steps the run began with."""
    out = copy_of(run, tmp_path)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: loads.append(1) or real_load(*a, **kw))
    assert cli.main(["train", "--out", str(out), "--resume", "--max-steps", "14"]) == 0
    assert len(loads) == 1
    monkeypatch.undo()
    assert json.loads((out / "config.json").read_text())["train"]["max_steps"] == 14
    assert torch.load(out / "checkpoint.pt", weights_only=True)["train_config"]["max_steps"] == 14


def test_eval_in_windows_from_a_zero_state(capsys, run):
    """--window W: every window of W characters read from zeros, equal to evaluating each window
    alone; a bad W is one error line."""
    from scratchrnn.lm import checkpoint
    from scratchrnn.lm.data import load_corpus
    from scratchrnn.lm.evaluation import evaluate_windows
    from scratchrnn.lm.model import cross_entropy

    ckpt = str(run / "checkpoint.pt")
    assert cli.main(["eval", "--checkpoint", ckpt, "--window", "8"]) == 0
    out = capsys.readouterr().out
    assert "in windows of 8 from a zero state" in out
    model, vocab, saved = checkpoint.load_model(ckpt)
    val = load_corpus(saved["train_config"]["data"], vocab).val
    window, n = 8, (len(val) - 1) // 8
    with torch.no_grad():  # the oracle: one window at a time, each from its own zero state
        losses = [cross_entropy(model(val[i * window : (i + 1) * window, None], model.init_state(1))[0],
                                val[i * window + 1 : (i + 1) * window + 1, None]).item() for i in range(n)]
    got = evaluate_windows(model, val, window, batch_size=3)  # batches that do not divide n
    assert got.chars == n * window and math.isclose(got.loss, sum(losses) / n, rel_tol=1e-6)
    assert f"val loss {got.loss:.4f} nats/char" in out
    fails(capsys, ["eval", "--checkpoint", ckpt, "--window", "0"], "window must be a positive integer, got 0")
    fails(capsys, ["eval", "--checkpoint", ckpt, "--window", str(len(val))], "too short for one window")


def test_max_steps_alone_is_the_only_limit_new_or_resumed(capsys, corpus, tmp_path):
    # --max-steps once stopped at the default 180 s budget, silently; on a resume at the end of a
    # time budget, --max-steps +30 trained one step.
    out = str(tmp_path / "run")
    flags = [f for f in TINY if f not in ("--max-steps", "12", "--time-budget", "0")]
    assert cli.main(["train", "--data", corpus, "--out", out, *flags, "--max-steps", "5"]) == 0
    written = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert written["max_steps"] == 5 and written["time_budget"] == 0
    assert cli.main(["train", "--out", out, "--resume", "--time-budget", "0.5",
                     "--max-steps", "1000000000"]) == 0  # ends by its clock
    step = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"]
    line = fails(capsys, ["train", "--out", out, "--resume", "--time-budget", "0.5"], "is finished")
    assert "a --time-budget above" in line and "--max-steps" not in line
    assert cli.main(["train", "--out", out, "--resume", "--max-steps", str(step + 3)]) == 0
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == step + 3


def test_progress_bar_counts_steps_with_the_time_left_and_resumes_at_its_step(corpus, tmp_path, monkeypatch):
    from tqdm import tqdm

    import scratchrnn.lm.train as train_module

    shown = io.StringIO()

    def bar(*args, **kw):  # the bar on a "terminal"
        return tqdm(*args, **{**kw, "disable": False, "file": shown, "mininterval": 0})

    monkeypatch.setattr(train_module, "tqdm", bar)
    out = str(tmp_path / "run")
    flags = [f for f in TINY if f != "--no-progress"]
    assert cli.main(["train", "--data", corpus, "--out", out, *flags]) == 0
    first = shown.getvalue()
    assert "1/12" in first and "12/12" in first and "step/s" in first and "s left" not in first
    shown.truncate(0)
    shown.seek(0)
    assert cli.main(["train", "--out", out, "--resume", "--max-steps", "20", "--time-budget", "600"]) == 0
    resumed = shown.getvalue()
    assert "13/20" in resumed and "20/20" in resumed and " 1/20" not in resumed
    assert re.search(r"\b[56]\d\d s left", resumed) and not re.search(r"\ds/s", resumed)  # was "1394.76 s/s"


def test_temperature_zero_is_greedy(capsys, run):
    # nanoGPT-style samplers take 0 for greedy; it was refused.
    ckpt = str(run / "checkpoint.pt")
    texts = set()
    for seed in ("1", "2"):
        argv = ["sample", "--checkpoint", ckpt, "--length", "40", "--temperature", "0", "--seed", seed]
        assert cli.main(argv) == 0
        texts.add(capsys.readouterr().out)
    assert len(texts) == 1  # the seed plays no part


@pytest.mark.parametrize("make", [
    lambda path: path.write_text("ROMEO: a text file, not a checkpoint\n"),
    lambda path: path.write_bytes(_zip_with_a_pickle_that_runs_code()),
])
def test_a_non_checkpoint_is_refused_without_torchs_weights_only_advice(capsys, tmp_path, make):
    # torch's message suggests retrying with weights_only=False: arbitrary code execution.
    path = tmp_path / "not.pt"
    make(path)
    line = fails(capsys, ["sample", "--checkpoint", str(path)], "not a")
    assert "weights_only" not in line and "False" not in line


def _zip_with_a_pickle_that_runs_code() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nq\x00.")
        z.writestr("archive/version", "3\n")
    return buffer.getvalue()


@pytest.mark.parametrize("command", ["demo", "bench", "lab", "train", "sample", "eval", "inspect"])
def test_help_states_each_default_once_and_never_none(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for nothing in ("(default: None)", "(default: )", "(default: False)"):
        assert nothing not in text
    if command == "inspect":  # "--text" printed two defaults
        text_help = text.split("--text TEXT UTF-8", 1)[1].split("--split", 1)[0]
        assert text_help.count("default") == 1
