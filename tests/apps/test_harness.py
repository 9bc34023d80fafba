"""The one timing harness (apps/bench/harness.py) shared by the benchmarks and the lab."""

from __future__ import annotations

from scratchrnn.apps.bench import harness
from scratchrnn.apps.bench.lm import step_flops
from scratchrnn.lm.config import TrainConfig


def test_interleaved_samples_rotate_the_order_and_run_setup_untimed():
    calls: list[str] = []
    cells = [{name: (lambda n=name: calls.append(n)) for name in "abc"}, {"d": lambda: calls.append("d")}]
    setup = {"a": lambda: calls.append("setup a")}
    samples = harness.interleaved_samples(cells, 3, setup=setup)
    assert set(samples) == set("abcd") and all(len(v) == 3 and min(v) >= 0 for v in samples.values())
    timed = [c for c in calls if c != "setup a"][8:]  # after two warm-up calls of each
    assert timed == ["a", "b", "c", "d", "b", "c", "a", "d", "c", "a", "b", "d"]  # rotated within a cell
    assert calls.count("setup a") == calls.count("a")  # before every call of a, warm-ups included


def test_a_sample_is_the_mean_of_enough_calls():
    samples = harness.interleaved_samples([{"x": lambda: None}], 2, min_sample_s=1.0, max_reps=5)
    assert len(samples["x"]) == 2  # 5 calls each (capped): still one sample per round


def test_interleaved_times_keeps_the_labs_summary():
    times = harness.interleaved_times({"f": lambda: None}, rounds=3)
    assert set(times["f"]) == {"best_s", "median_s"} and times["f"]["best_s"] <= times["f"]["median_s"]


def test_md_table_escapes_bars_and_rounds_floats():
    text = harness.md_table(["a|b", "x"], [[0.000123456, 12345.6], ["p|q", 1.5]])
    assert text.splitlines() == ["| a\\|b | x |", "|---|---|", "| 1.23e-04 | 1.23e+04 |", "| p\\|q | 1.5 |"]


def test_machine_info_names_the_cpu():
    info = harness.machine_info()
    assert info["CPU"] and info["torch"].startswith(harness.torch.__version__)


def test_the_lm_steps_flops_are_issue_11s_12_gflop():
    assert round(step_flops(65, 64, TrainConfig()) / 1e9, 1) == 12.1  # H = 640, N = T = 64, E = 64
