"""The hostile-user probe of issue 18, as tests: crafted checkpoints (made here, from a real run,
never committed), huge lengths, a huge file, Ctrl-C during the imports, a damaged log, a changed
data file, a meta-device input. Each is one error line and exit status 2 (130 for Ctrl-C), with
nothing allocated for a model that the file does not hold and nothing in the run overwritten.

The inspect page's cases (script injection, code points, wide ids) are in
tests/apps/test_inspect_hostile.py; the C loop's (shapes, ASan, the cache) in tests/core.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scratchrnn import RNN, RNNCell
from scratchrnn.apps import cli
from scratchrnn.lm import data
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.train import Trainer

TINY = ["--hidden-size", "16", "--embedding-dim", "4", "--batch-size", "4", "--seq-len", "8",
        "--max-steps", "4", "--time-budget", "0", "--eval-interval", "2", "--eval-streams", "4",
        "--sample-length", "10", "--no-progress"]


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    """A trained tiny run directory (4 steps), never changed by a test: copy it first."""
    out = tmp_path_factory.mktemp("probe") / "run"
    assert cli.main(["train", "--data", corpus, "--out", str(out), *TINY]) == 0
    return out


def contents(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def fails(capsys, argv: list[str], match: str) -> str:
    """Run the CLI in-process: exit status 2 and one line on stderr containing ``match``."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith(f"scratchrnn {argv[0]}: error: ") and match in lines[0], lines[0]
    return lines[0]


def hostile(run: Path, tmp_path: Path, change) -> Path:
    """A copy of the run whose checkpoint.pt has been through ``change(ckpt)``."""
    out = tmp_path / "hostile"
    shutil.copytree(run, out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    change(ckpt)
    torch.save(ckpt, out / "checkpoint.pt")
    return out


def setting(name, value):
    return lambda ckpt: ckpt["train_config"].__setitem__(name, value)


def field(name, value):
    return lambda ckpt: ckpt.__setitem__(name, value)


# Case 5 of the issue (and the vocabulary of case 1): each was a traceback, or a wrong answer.
BAD_FIELDS = {
    "data-is-5": (setting("data", 5), "train_config.data must be of type str | None, got 5"),
    "train_config-a-list": (field("train_config", [1, 2]), "train_config must be a dict"),
    "eval_streams-0": (setting("eval_streams", 0), "eval_streams must be a positive integer, got 0"),
    "seq_len-a-string": (setting("seq_len", "16"), "train_config.seq_len must be of type int, got '16'"),
    "seq_len-negative": (setting("seq_len", -5), "seq_len must be a positive integer, got -5"),
    "model-a-list": (field("model", [1, 2]), "model must be a state_dict"),
    "model_config-a-list": (field("model_config", [1, 2]), "model_config must be a dict"),
    "schedule-a-string": (field("schedule", "cosine"), "schedule must be a dict of max_steps and"),
    "vocab-12345": (field("vocab", 12345), "vocab must be a string of distinct characters, got 12345"),
    "vocab-a-list-of-markup": (lambda c: c.__setitem__("vocab", ["<img src=x onerror=alert(1)>",
                                                                *c["vocab"][1:]]),
                               "vocab must be a string of distinct characters, got list"),
    "vocab-repeats": (lambda c: c.__setitem__("vocab", c["vocab"][0] * len(c["vocab"])), "repeats some"),
    "step-a-float": (field("step", 2.5), "step must be an integer ≥ 0, got 2.5"),
    "elapsed-nan": (field("elapsed", float("nan")), "elapsed must be a number ≥ 0, got nan"),
    "time_budget-10**400": (setting("time_budget", 10**400), "train_config.time_budget must be of type"),
    "hidden_size-10**30": (lambda c: c["model_config"].__setitem__("hidden_size", 10**30),
                           "model_config.hidden_size must be a positive integer ≤ 2147483647"),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
@pytest.mark.parametrize("command", ["eval", "sample", "resume"])
def test_a_checkpoint_field_of_the_wrong_type_or_range_is_one_line(run, tmp_path, capsys, case, command):
    change, match = BAD_FIELDS[case]
    out = hostile(run, tmp_path, change)
    before = contents(out)
    ckpt = str(out / "checkpoint.pt")
    argv = {"eval": ["eval", "--checkpoint", ckpt], "sample": ["sample", "--checkpoint", ckpt],
            "resume": ["train", "--out", str(out), "--resume", "--max-steps", "6"]}[command]
    line = fails(capsys, argv, match)
    assert "is not a valid checkpoint" in line
    assert contents(out) == before  # nothing overwritten


def test_a_checkpoint_claiming_a_huge_model_is_refused_before_any_allocation(run, tmp_path):
    """Case 3: H = 30000 in a file of a few KB. The model was built from model_config (3.8 GB for
    the tanh RNN, 14 s; three times that for the default GRU) before the tensors were compared with
    it; now the comparison runs on the meta device."""
    out = hostile(run, tmp_path, lambda c: c["model_config"].__setitem__("hidden_size", 30000))
    proc = subprocess.Popen([sys.executable, "-m", "scratchrnn", "eval", "--checkpoint",
                             str(out / "checkpoint.pt")], stderr=subprocess.PIPE, text=True)
    with proc.stderr:
        err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert usage.ru_maxrss * 1024 < 2e9  # torch itself is ~0.5 GB; the model would be 11 GB
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "rnn.weight_ih_l0 is (48, 4), and model_config says (90000, 4)" in err  # the GRU's 3H rows


def test_resuming_through_the_python_api_checks_the_sizes_before_building(run, tmp_path):
    """The same door without the command line: settings and model_config both claiming H = 30000."""
    def claim(ckpt):
        ckpt["model_config"]["hidden_size"] = ckpt["train_config"]["hidden_size"] = 30000

    out = hostile(run, tmp_path, claim)
    before = contents(out)
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["train_config"]
    config = TrainConfig(**{**saved, "max_steps": 6, "out": str(out)})
    with pytest.raises(ValueError, match=r"weight_ih_l0 is \(48, 4\), and model_config says \(90000, 4\)"):
        Trainer(config, resume=True)
    assert contents(out) == before


def test_huge_lengths_are_one_line(run, capsys, tmp_path):
    """Case 6: the sample's ids were allocated first (a RuntimeError traceback)."""
    ckpt = str(run / "checkpoint.pt")
    fails(capsys, ["sample", "--checkpoint", ckpt, "--length", str(10**12)],
          "length must be ≥ 0 and at most 10,000,000")
    fails(capsys, ["train", "--out", str(tmp_path / "r"), *TINY, "--sample-length", str(10**12)],
          "sample_length must be at most 10,000,000")
    assert not (tmp_path / "r").exists()


def test_a_file_too_large_for_memory_is_refused_before_it_is_read(tmp_path, capsys, monkeypatch):
    """Case 7: 1 GiB of text (sparse here: no disk used) was read, then its ids made a MemoryError
    after 67 s; the memory it needs is now estimated from its size first."""
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(2**30)
    monkeypatch.setattr(data, "available_memory", lambda: 8 * 10**9)
    t0 = time.monotonic()
    fails(capsys, ["train", "--data", str(big), "--out", str(tmp_path / "r"), *TINY],
          "is 1,073,741,824 bytes: reading it and encoding its characters as ids needs about 21.5 GB "
          "of memory, and 8 GB is available")
    assert time.monotonic() - t0 < 30 and not (tmp_path / "r").exists()  # never read


def test_encoding_is_vectorised_and_drops_what_the_vocabulary_lacks():
    vocab = data.Vocab("ab😀\n")
    ids, dropped = vocab.encode_known("a😀xb\n\U0010ffff")
    assert ids.tolist() == [0, 2, 1, 3] and dropped == 2 and ids.dtype == torch.int64
    ids, dropped = vocab.encode_known("")
    assert ids.tolist() == [] and dropped == 0


def test_ctrl_c_during_the_imports_is_one_line_and_status_130(tmp_path):
    """Case 8: the console script's SIGINT handler comes before `import torch`."""
    script = Path(sys.executable).parent / "scratchrnn"
    if not script.exists():
        pytest.skip("the console script is not installed in this environment")
    proc = subprocess.Popen([str(script), "sample", "--checkpoint", str(tmp_path / "none.pt")],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "/torch/" not in Path(f"/proc/{proc.pid}/maps").read_text():  # torch is being imported
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.002)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "scratchrnn: stopped by SIGINT\n", (proc.returncode, err)


def test_a_partial_last_log_line_is_skipped_with_a_warning(run, tmp_path, caplog):
    """Case 9: a kill or a full disk in the middle of a log write left half a record."""
    out = tmp_path / "run"
    shutil.copytree(run, out)
    whole = len((out / "log.jsonl").read_text().splitlines())
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 5, "time": 1.0, "tra')
    with caplog.at_level(logging.WARNING):
        assert cli.main(["train", "--out", str(out), "--resume", "--max-steps", "6"]) == 0
    assert f"log.jsonl, line {whole + 1}: skipped a partial last record" in caplog.text
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-1] == 6 and all("step" in r for r in records)


@pytest.mark.parametrize("damage, match", [
    ('{"time": 1.0, "train_loss": 2.0}\n', "log.jsonl, line 2: a record without an integer step"),
    ("[1, 2]\n", "log.jsonl, line 2: not a record (a JSON object), got list"),
    ("not json\n", "log.jsonl, line 2: not a JSON record"),
    ('{"step": 1, "time": 1.0, "train_loss": "low"}\n', "line 2: train_loss must be a number, got 'low'"),
])
def test_a_damaged_log_is_one_line_naming_the_file_and_line(run, tmp_path, capsys, damage, match):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    lines = (out / "log.jsonl").read_text().splitlines(keepends=True)
    (out / "log.jsonl").write_text(lines[0] + damage + "".join(lines[1:]))
    before = contents(out)
    fails(capsys, ["train", "--out", str(out), "--resume", "--max-steps", "6"], match)
    assert contents(out) == before


def test_a_changed_data_file_is_said_on_resume(corpus, tmp_path, capsys, caplog):
    """Case 11: training went on over the new text without a word."""
    text = tmp_path / "text.txt"
    shutil.copy(corpus, text)
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(text), "--out", str(out), *TINY]) == 0
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["data_file"]
    assert saved["bytes"] == text.stat().st_size and len(saved["sha256"]) == 64
    with open(text, "a") as f:
        f.write("A new line of text.\n")
    before = contents(out)
    resume = ["train", "--out", str(out), "--resume", "--max-steps", "6"]
    fails(capsys, resume, f"the data file {text} changed since the checkpoint of step 4")
    assert contents(out) == before
    with caplog.at_level(logging.WARNING):
        assert cli.main([*resume, "--allow-data-change"]) == 0
    assert "going on over the new text (--allow-data-change)" in caplog.text
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    changed = [r for r in records if "data_changed" in r]
    assert len(changed) == 1 and changed[0]["step"] == 4
    assert changed[0]["data_changed"]["now"]["bytes"] == text.stat().st_size
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["data_file"]["bytes"] == text.stat().st_size  # the new text is the run's now
    assert cli.main(["train", "--out", str(out), "--resume", "--max-steps", "8"]) == 0
    with open(text, "a") as f:  # --allow-data-change held for that one command only
        f.write("And another.\n")
    fails(capsys, ["train", "--out", str(out), "--resume", "--max-steps", "10"], "changed since")


def test_a_cpu_module_refuses_a_meta_input_as_nn_rnn_does():
    """Case 12: our module returned a meta output, having computed nothing."""
    x = torch.empty(3, 2, 4, device="meta")
    with pytest.raises(RuntimeError, match="not at the same device") as theirs:
        torch.nn.RNN(4, 8)(x)
    with pytest.raises(RuntimeError, match="not at the same device, found input tensor at meta") as ours:
        RNN(4, 8)(x)
    assert type(ours.value) is type(theirs.value)
    with pytest.raises(RuntimeError, match="not at the same device"):  # the cell goes through the same door
        RNNCell(4, 8)(torch.empty(2, 4, device="meta"))
    with torch.device("meta"):  # a meta module with a meta input: shapes only, as for nn.RNN
        assert RNN(4, 8)(torch.empty(3, 2, 4))[0].device.type == "meta"
