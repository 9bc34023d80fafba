"""What every timing in the project shares: interleaved rounds, the machine's description, tables.

The RNN benchmark (bench/rnn.py), the language-model benchmark (bench/lm.py) and the lab's timed
experiments all time through :func:`interleaved_samples`, describe the machine with
:func:`machine_info` and write markdown with :func:`md_table`. :data:`METHOD` says how, once.
"""

from __future__ import annotations

import gc
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch

from scratchrnn.core import accel

K = TypeVar("K", bound=Hashable)

METHOD = """\
**Timing.** One process; every variant of a cell timed back to back, in rounds. First two untimed
warm-up calls of every variant, the second of which sets how many calls make one sample (enough
for `min_sample_s`, at most `max_reps`); then each round times every variant of every cell in
turn, the order within a cell rotated by one each round so that no variant always goes first. A
sample is the mean time per call (any per-call setup, such as setting gradients to None, runs
untimed before each call); a figure is the median of the samples over the rounds, and `spread`
the interquartile range over the median. Python's garbage collector is off while timing. On a
shared machine a burst of other work then slows every variant of a round alike, and the ratios
between variants, measured side by side, are steadier than the times themselves."""


def _nothing() -> None:
    pass


def _mean_time(fn: Callable[[], object], setup: Callable[[], object], reps: int) -> float:
    total = 0.0
    for _ in range(reps):
        setup()
        start = time.perf_counter()
        fn()
        total += time.perf_counter() - start
    return total / reps


def interleaved_samples(
    cells: Sequence[Mapping[K, Callable[[], object]]],
    rounds: int,
    *,
    setup: Mapping[K, Callable[[], object]] | None = None,
    min_sample_s: float = 0.0,
    max_reps: int = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[K, list[float]]:
    """Seconds per call of every variant of every cell, one sample per round (see :data:`METHOD`).

    Args:
        cells: groups of variants timed back to back (keys unique over all cells).
        setup: per key, an untimed call before each timed one.
        min_sample_s, max_reps: a sample is the mean of enough calls to last ``min_sample_s``,
            but at most ``max_reps`` (1: one call per sample).
    """
    setup = setup or {}
    reps: dict[K, int] = {}
    for cell in cells:
        for key, fn in cell.items():
            _mean_time(fn, setup.get(key, _nothing), 1)
            t = _mean_time(fn, setup.get(key, _nothing), 1)
            reps[key] = max(1, min(max_reps, math.ceil(min_sample_s / max(t, 1e-9))))
    samples: dict[K, list[float]] = {key: [] for key in reps}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # a collection inside a timed call would land on one variant only
    try:
        for r in range(rounds):
            if progress:
                progress(f"round {r + 1}/{rounds}")
            for cell in cells:
                keys = list(cell)
                k = r % len(keys)
                for key in keys[k:] + keys[:k]:
                    samples[key].append(_mean_time(cell[key], setup.get(key, _nothing), reps[key]))
            gc.collect()
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, dict[str, float]]:
    """One call per sample of each ``fn``: the best and the median seconds over ``rounds`` rounds."""
    samples = interleaved_samples([fns], rounds, setup=setup)
    return {name: {"best_s": min(v), "median_s": statistics.median(v)} for name, v in samples.items()}


def spread(values: Sequence[float]) -> float:
    """The interquartile range over the median: how noisy a cell's rounds were."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / statistics.median(values)


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cpu_name() -> str:
    """The CPU's model name, with vendor, family and model (under a hypervisor the name can be generic)."""
    info = accel.cpu_info()
    if "model name" not in info:
        return platform.processor() or platform.machine() or "unknown CPU"
    vendor, family, number = (info.get(k, "?") for k in ("vendor_id", "cpu family", "model"))
    return f"{info['model name']} ({vendor}, family {family}, model {number})"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info() -> dict[str, str]:
    """The machine a timing ran on, as (field, value) for a table."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    blas = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    return {
        "CPU": cpu_name(),
        "logical CPUs": f"{os.cpu_count()} ({usable} usable by this process)",
        "torch": f"{torch.__version__} ({blas}, CPU capability {torch.backends.cpu.get_cpu_capability()})",
        "Python": platform.python_version(),
        "OS": platform.platform(),
    }


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats are written with 3 significant digits."""

    def cell(v: object) -> str:
        text = fmt(v) if isinstance(v, float) else str(v)
        return text.replace("|", "\\|")  # a bare | would end the cell

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(v: float) -> str:
    """3 significant digits, scientific notation outside [1e-3, 1e4)."""
    if v == 0 or not math.isfinite(v):
        return str(v)
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.3g}"
    return f"{v:.2e}"


def fmt_ms(seconds: float) -> str:
    """A time in milliseconds for the reports' tables: 3 decimals below 1 ms, 2 below 100, else 1."""
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.1f}"
