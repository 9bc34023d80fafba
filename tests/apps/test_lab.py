"""The lab: every experiment runs in --quick mode, writes its files, and its numbers are sane.

``scratchrnn lab all --quick`` runs once for the whole module (through the command line, as a user
would); each test then reads one experiment's ``results.json``.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
import torch

from scratchrnn.apps.cli import main
from scratchrnn.apps.lab import EXPERIMENTS
from scratchrnn.apps.lab.adding import BASELINE_MSE, adding_batch
from scratchrnn.apps.lab.concat import concat_weights, split_weights


@pytest.fixture(scope="module")
def lab_all(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lab")
    assert main(["lab", "all", "--quick", "--out", str(out)]) == 0
    return out


def _numbers(out: Path, name: str) -> dict:
    return json.loads((out / name / "results.json").read_text())


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_each_experiment_writes_its_plot_summary_and_numbers(lab_all, name):
    folder = lab_all / name
    pngs = list(folder.glob("*.png"))
    assert pngs, f"{name} wrote no plot"
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (folder / "summary.md").read_text()
    assert summary.startswith(f"# {name}")
    for png in pngs:
        assert f"({png.name})" in summary  # the summary shows its plot
    assert _numbers(lab_all, name)
    assert f"| {name} | {name}/ |" in (lab_all / "lab_all.md").read_text()


def test_gradflow_small_init_vanishes_orders_of_magnitude_below_default(lab_all):
    numbers = _numbers(lab_all, "gradflow")
    assert numbers["T"] >= 100
    cases = numbers["cases"]
    small, default = cases["×0.01 (tutorial)"], cases["PyTorch default"]
    irnn = cases["IRNN (identity, ReLU)"]
    # ∂L/∂h_T has norm 1; at t = 1 the ×0.01 init's gradient is many decades below the default's.
    assert small["norm_at_T"] == pytest.approx(1.0)
    assert small["norm_at_1"] < 1e-20 * default["norm_at_1"]
    assert small["spectral_radius"] < default["spectral_radius"] < 1.0
    assert irnn["spectral_radius"] == pytest.approx(1.0)
    assert irnn["norm_at_1"] > 1e-3  # the IRNN keeps the gradient alive over T steps
    for case in cases.values():  # our chained BPTT agrees with a full call and with autograd
        assert case["dh0_rel_diff_full_call"] < 1e-12
        assert case["dh0_rel_diff_autograd_reference"] < 1e-12


def test_looporder_swapped_loops_give_the_same_numbers(lab_all):
    numbers = _numbers(lab_all, "looporder")
    diffs = numbers["max_abs_diff_float64"]
    swapped = diffs["layer-major loop (swapped, autograd)"]
    ours = diffs["scratchrnn.RNN (layer-major, hand-written BPTT)"]
    assert set(ours) >= {"output", "h_n", "dx", "dh0", "dweight_hh_l2", "dbias_ih_l0"}
    assert max(swapped.values()) == 0.0  # the same operations in another order: bit for bit
    assert max(ours.values()) <= 1e-12
    for bench in numbers["benchmarks"]:
        for timing in bench["timings"].values():
            assert timing["forward_s"] > 0 and timing["forward_backward_s"] > 0
    shapes = {k: v["shape"] for k, v in numbers["output_assembly"].items()}
    assert shapes["cat(unsqueeze(1), dim=1) (tutorial)"] == [5, 4, 8]  # (N, T, H): batch-first
    assert shapes["stack(dim=0)"] == shapes["preallocated out[t] = h_t"] == [4, 5, 8]
    assert all(v["max_diff_from_stack"] == 0.0 for v in numbers["output_assembly"].values())


def test_concat_form_equals_two_matrix_form(lab_all):
    numbers = _numbers(lab_all, "concat")
    for key in (
        "one_step_max_abs_diff",
        "sequence_output_max_abs_diff",
        "sequence_h_n_max_abs_diff",
        "grad_W_vs_concat_of_dW_ih_dW_hh",
        "grad_b_vs_db",
        "round_trip_two_one_two_bias_sum",
        "converted_into_torch_nn_RNN_output_diff",
    ):
        assert numbers[key] <= 1e-12, key
    assert numbers["round_trip_two_one_two_weights"] == 0.0
    assert numbers["round_trip_one_two_one"] == 0.0


def test_concat_and_split_are_inverse():
    W_ih, W_hh = torch.randn(4, 3), torch.randn(4, 4)
    W = concat_weights(W_ih, W_hh)
    assert W.shape == (4, 7)
    a, b = split_weights(W, 3)
    assert torch.equal(a, W_ih) and torch.equal(b, W_hh)


def test_adding_numbers_are_sane(lab_all):
    numbers = _numbers(lab_all, "adding")
    assert numbers["baseline_mse"] == pytest.approx(1 / 6)
    for per_init in numbers["results"].values():
        assert len(per_init) == 5
        for r in per_init.values():
            assert r["steps"][0] == 0 and len(r["steps"]) == len(r["val_mse"])
            assert r["best_mse"] <= r["val_mse"][0]


def test_longadding_runs_sgd_per_length_init_and_learning_rate(lab_all):
    numbers = _numbers(lab_all, "longadding")
    config = numbers["config"]
    assert set(numbers["results"]) == {str(T) for T in config["lengths"]}
    for T, per_init in numbers["results"].items():
        assert set(per_init) == {"IRNN (identity, ReLU)", "PyTorch default", "orthogonal", "×0.01 (tutorial)"}
        for label, per_lr in per_init.items():
            assert set(per_lr) == {str(lr) for lr in config["lrs"]}
            best = numbers["best"][T][label]
            assert best["best_mse"] == min(r["best_mse"] for r in per_lr.values())
            for r in per_lr.values():  # the same budget of time steps: updates × T
                assert r["steps"][-1] == config["step_budget"] // int(T) or r["solved_at_step"]


def test_lab_all_skips_the_long_experiment_unless_asked(tmp_path, monkeypatch):
    import scratchrnn.apps.lab as lab

    ran = []
    monkeypatch.setattr(lab, "run", lambda name, out, quick=False: ran.append(name) or lab.LabResult(
        name, Path(out), {}, ""))
    (tmp_path / "img").mkdir()
    lab.run_all(tmp_path / "img")
    assert "longadding" not in ran and ran == [n for n in EXPERIMENTS if not lab.is_long(n)]
    ran.clear()
    lab.run_all(tmp_path / "img", long=True)
    assert ran == list(EXPERIMENTS)


def test_adding_batch_is_the_adding_problem():
    T, N = 20, 50_000
    x, y = adding_batch(T, N, torch.Generator().manual_seed(0))
    assert x.shape == (T, N, 2) and y.shape == (N,)
    markers = x[:, :, 1]
    assert torch.equal(markers.sum(0), torch.full((N,), 2.0))
    assert torch.equal(markers[: T // 2].sum(0), torch.ones(N))  # one marker in each half
    torch.testing.assert_close((x[:, :, 0] * markers).sum(0), y)
    # Always predicting 1 scores Var(u₁ + u₂) = 1/6.
    assert ((y - 1) ** 2).mean().item() == pytest.approx(BASELINE_MSE, rel=0.03)


def test_cli_lab_one_experiment_prints_its_summary(tmp_path, capsys):
    assert main(["lab", "concat", "--quick", "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("# concat")
    assert str(tmp_path / "c" / "concat.png") in printed


def test_cli_lab_refuses_a_file_as_its_folder(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    assert main(["lab", "concat", "--quick", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scratchrnn lab: error: Expected a directory")
    assert target.read_text() == "not a folder"


def test_depth_adds_one_rnn_layer_of_parameters_per_layer(lab_all):
    numbers = _numbers(lab_all, "depth")
    runs = numbers["runs"]
    H = numbers["settings"]["hidden_size"]
    assert [r["num_layers"] for r in runs] == [1, 2, 3, 4]
    for shallow, deep in itertools.pairwise(runs):
        # each layer past the first: W_ih (H, H), W_hh (H, H), b_ih, b_hh
        assert deep["parameters"] - shallow["parameters"] == 2 * H * H + 2 * H
        assert deep["rnn_parameters"] - shallow["rnn_parameters"] == 2 * H * H + 2 * H
    for r in runs:
        assert 0 < r["val_loss"] < 10 and r["val_curve"][-1][1] == r["val_loss"]
        assert r["seconds"] > 0


ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = [ROOT / "docs" / "tutorial.md", ROOT / "docs" / "tutorial.zh.md"]


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_quotes_the_code_as_it_is(tutorial):
    # Each code block after "<!-- quote: PATH -->" must be lines of PATH, verbatim (indentation
    # aside): the tutorials point at the code by quoting it, and a quote must not drift from it.
    text = tutorial.read_text(encoding="utf-8")
    quotes = re.findall(r"<!-- quote: (\S+) -->\n```python\n(.*?)```", text, flags=re.S)
    assert len(quotes) >= 8
    for path, block in quotes:
        source = {line.strip() for line in (ROOT / path).read_text(encoding="utf-8").splitlines()}
        for line in block.splitlines():
            assert line.strip() in source, f"{tutorial.name} quotes a line not in {path}: {line!r}"


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=lambda p: p.name)
def test_tutorial_shows_the_plots_that_lab_all_writes(tutorial):
    text = tutorial.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\((img/[^)]+)\)", text)
    # Every experiment's plots, and the inspect page's screenshots (made by scratchrnn inspect and
    # tests/apps/chromium.py, as the chapter "What did the network learn?" says).
    assert {Path(i).parent.name for i in images} == set(EXPERIMENTS) | {"inspect"}
    for image in images:
        assert (tutorial.parent / image).is_file(), image
        assert (tutorial.parent / image).parent.joinpath("summary.md").is_file()
    assert "⟦" not in text  # no number left unfilled
