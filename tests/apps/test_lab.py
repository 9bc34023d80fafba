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
from scratchrnn.apps.lab import EXPERIMENTS, gradflow
from scratchrnn.apps.lab.adding import BASELINE_MSE, adding_batch
from scratchrnn.apps.lab.concat import concat_weights, split_weights
from scratchrnn.apps.ours import gru_class
from scratchrnn.core import modules


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


class _StandInGRU(torch.nn.GRU):
    """Stands in for scratchrnn.GRU: gradflow measures through ours where the core has one."""


@pytest.mark.parametrize("ours", [False, True], ids=["nn.GRU", "stand-in scratchrnn.GRU"])
def test_gradflow_gru_keeps_more_gradient_than_elman_and_most_with_the_gate_open(tmp_path, monkeypatch, ours):
    if ours:
        monkeypatch.setattr(modules, "GRU", _StandInGRU, raising=False)
    elif gru_class() is not None:
        pytest.skip("this build has scratchrnn.GRU: the nn.GRU fallback is not reachable")
    numbers = gradflow.run(tmp_path, quick=True).numbers
    gru, elman = numbers["gru"], numbers["cases"]["PyTorch default"]
    assert {g["implementation"] for g in gru.values()} == {"scratchrnn.GRU" if ours else "nn.GRU"}
    assert elman["norm_at_1"] < gru["default"]["norm_at_1"] < gru["open"]["norm_at_1"]
    assert gru["default"]["mean_update_gate"] < 0.6 and gru["open"]["mean_update_gate"] > 0.9
    assert gru["open"]["per_step_factor"] > 0.9
    for g in gru.values():
        assert g["norm_at_T"] == pytest.approx(1.0)
        assert g["dh0_rel_diff_full_call"] < 1e-12 and g["dh0_rel_diff_nn_gru"] < 1e-12
    assert "## The GRU" in (tmp_path / "summary.md").read_text()


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


def test_longadding_runs_each_arm_per_length_init_and_learning_rate(lab_all):
    numbers = _numbers(lab_all, "longadding")
    arms = numbers["config"]["arms"]
    assert set(arms) == {"sgd", "adam"} and arms["sgd"]["optimizer"] == "sgd"
    inits = {"IRNN (identity, ReLU)", "PyTorch default", "orthogonal", "×0.01 (tutorial)"}
    for name, arm in arms.items():
        per_T = numbers["results"][name]
        assert set(per_T) == set(arm["updates"])
        for T, per_init in per_T.items():
            assert set(per_init) == inits
            for label, per_lr in per_init.items():
                assert set(per_lr) == {str(lr) for lr in arm["lrs"]}
                best = numbers["best"][name][T][label]
                assert numbers["steps_to_solve"][name][T][label] == best["solved_at_step"]
                for r in per_lr.values():  # each run has its arm's budget, or stopped once solved
                    assert r["steps"][-1] == arm["updates"][T] or r["solved_at_step"] == r["steps"][-1]
    assert set(numbers["ms_per_update"]) == {T for arm in arms.values() for T in arm["updates"]}
    assert all(ms > 0 for ms in numbers["ms_per_update"].values())


def test_longadding_summary_has_a_steps_to_solve_table_per_arm(lab_all):
    from scratchrnn.apps.lab.prose import summary_table

    numbers = _numbers(lab_all, "longadding")
    for k, (name, arm) in enumerate(numbers["config"]["arms"].items(), start=1):
        table = summary_table(lab_all, "longadding", k).splitlines()
        assert table[0] == "| steps to solve | " + " | ".join(f"T = {T}" for T in arm["updates"]) + " |"
        assert table[2] == "| budget (updates per run) | " + " | ".join(
            str(n) for n in arm["updates"].values()) + " |"
        irnn = next(row for row in table if row.startswith("| IRNN"))
        for T, cell in zip(arm["updates"], irnn.split(" | ")[1:], strict=True):
            solved = numbers["steps_to_solve"][name][T]["IRNN (identity, ReLU)"]
            assert cell.startswith(str(solved) if solved is not None else "— (best ")


def _run(best_mse: float, solved: int | None, last: int = 100) -> dict:
    return {"steps": [0, last], "val_mse": [0.9, best_mse], "best_mse": best_mse, "solved_at_step": solved}


def test_longadding_best_lr_is_the_first_to_solve_else_the_lowest_mse():
    from scratchrnn.apps.lab.longadding import best_lr, best_runs

    # A run that solved earlier beats one that solved later with a lower MSE.
    assert best_lr({"0.01": _run(0.001, 90), "0.001": _run(0.009, 40, last=40)}) == "0.001"
    assert best_lr({"0.01": _run(0.15, None), "0.001": _run(0.009, 80, last=80)}) == "0.001"
    assert best_lr({"0.01": _run(0.15, None), "0.001": _run(0.16, None)}) == "0.01"
    assert best_lr({"0.01": _run(float("nan"), None), "0.001": _run(0.16, None)}) == "0.001"
    best = best_runs({"adam": {"100": {"IRNN": {"0.01": _run(0.05, None)}}}})["adam"]["100"]["IRNN"]
    assert best == {"lr": 0.01, "best_mse": 0.05, "updates_run": 100, "learning_at_step": 100,
                    "solved_at_step": None}


def test_longadding_training_flushes_subnormals_and_restores_them(monkeypatch):
    from scratchrnn.apps.lab import longadding

    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormal floats")
    torch.set_flush_denormal(False)
    subnormal = torch.tensor(1e-40)
    seen = []

    def fake_train(*args, **kwargs):
        seen.append((subnormal * 1.0).item())
        return {}

    cfg = longadding.settings(quick=True)
    arm = cfg["arms"]["sgd"]
    monkeypatch.setattr(longadding, "train", fake_train)
    longadding._train_one(10, ("IRNN (identity, ReLU)", "identity", "relu"), arm, 1e-2, cfg, 0)
    assert seen == [0.0]  # flushed during the run...
    assert (subnormal * 1.0).item() > 0  # ... and not after it


def test_longadding_quick_and_long_settings():
    from scratchrnn.apps.lab.longadding import settings

    quick, long = settings(quick=True), settings(quick=False)
    assert max(T for arm in quick["arms"].values() for T in arm["updates"]) <= 20
    # The long mode is the paper's setting: H = 100, batch 16, SGD at T >= 100, one process.
    assert long["train"]["hidden_size"] == 100 and long["train"]["batch_size"] == 16
    assert long["arms"]["sgd"]["optimizer"] == "sgd" and min(long["arms"]["sgd"]["updates"]) >= 100
    assert long["workers"] == 1


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


def test_cli_lab_into_docs_img_refreshes_the_tutorial_next_to_it(tmp_path, monkeypatch):
    import scratchrnn.apps.lab as lab

    def measure(name, out, quick=False):  # a full-size run, faked: its results.json
        Path(out).mkdir(parents=True)
        (Path(out) / "results.json").write_text('{"bench_shape": {"T": 7}}')
        return lab.LabResult(name, Path(out), {}, "# concat")

    monkeypatch.setattr(lab, "run", measure)
    tutorial = tmp_path / "tutorial.md"
    tutorial.write_text("T is 0<!-- = concat/bench_shape/T -->.\n", encoding="utf-8")
    assert main(["lab", "concat", "--out", str(tmp_path / "img" / "concat")]) == 0
    assert tutorial.read_text(encoding="utf-8") == "T is 7<!-- = concat/bench_shape/T -->.\n"


@pytest.mark.parametrize("name", ["concat", "all"])
def test_cli_lab_quick_into_docs_img_is_refused_and_rewrites_nothing(tmp_path, capsys, name):
    # The README's `--out docs/img/NAME` with --quick would put toy numbers into the prose.
    (tmp_path / "docs" / "img").mkdir(parents=True)
    (tmp_path / "README.md").write_text("T is 0<!-- = concat/bench_shape/T -->.\n", encoding="utf-8")
    tutorial = tmp_path / "docs" / "tutorial.md"
    tutorial.write_text("T is 0<!-- = concat/bench_shape/T -->.\n", encoding="utf-8")
    out = tmp_path / "docs" / "img" / ("concat" if name == "concat" else "")
    assert main(["lab", name, "--quick", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--quick measures at toy sizes" in err[0] and "leave out --quick" in err[0]
    assert not (out / "results.json").exists() and not (out / "lab_all.md").exists()
    assert tutorial.read_text(encoding="utf-8") == "T is 0<!-- = concat/bench_shape/T -->.\n"


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


def test_options_trains_every_single_for_each_seed_in_the_same_budget(lab_all):
    from scratchrnn.apps.lab.options import SEEDS, SINGLES

    numbers = _numbers(lab_all, "options")
    configs = numbers["configs"]
    assert [key for key, _, _ in SINGLES] == numbers["order"][: len(SINGLES)]  # then "combined", if any
    for key, _, changes in SINGLES:
        assert configs[key]["changes"] == changes
        assert len(configs[key]["seeds"]) == len(SEEDS)
        assert configs[key]["steps"] > 0
    budget = numbers["settings"]["time_budget"]
    for r in numbers["runs"]:
        assert r["seconds"] <= budget * 1.5 and r["val_curve"]  # each run kept to its wall time
    assert configs["default"]["delta"] == 0
    assert numbers["best"] == min(configs, key=lambda k: configs[k]["mean"])


def test_options_combines_the_singles_that_beat_the_default_but_not_the_gru():
    from scratchrnn.apps.lab.options import combination

    configs = {"default": {"mean": 1.5, "changes": {}},
               "layer_norm": {"mean": 1.49, "changes": {"layer_norm": True}},
               "zoneout": {"mean": 1.51, "changes": {"zoneout": 0.05}},
               "weight_drop": {"mean": 1.48, "changes": {"weight_drop": 0.2}},
               "gru": {"mean": 1.4, "changes": {"cell": "gru"}}}
    assert combination(configs) == {"layer_norm": True, "weight_drop": 0.2}
