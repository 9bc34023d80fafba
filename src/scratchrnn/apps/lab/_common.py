"""What every experiment shares: its result, the files it writes, plotting and timing helpers.

Plots use matplotlib's object-oriented API (``Figure`` + ``savefig``) rather than pyplot, so no
backend is selected globally and nothing opens a window.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # matplotlib is imported when a figure is made, not when the CLI starts
    from matplotlib.figure import Figure


# (label, init scheme of scratchrnn.core.init, nonlinearity): the tutorial's and PyTorch's inits,
# two that keep ρ(W_hh) ≈ 1, and the IRNN, which is identity + ReLU. gradflow, adding and longadding
# compare them.
CASES = (
    ("×0.01 (tutorial)", "small", "tanh"),
    ("PyTorch default", "default", "tanh"),
    ("Xavier", "xavier", "tanh"),
    ("orthogonal", "orthogonal", "tanh"),
    ("IRNN (identity, ReLU)", "identity", "relu"),
)


@dataclass
class LabResult:
    """What one experiment produced.

    Attributes:
        name: the experiment ('gradflow', ...).
        out: the run folder it wrote to.
        numbers: the measured numbers (JSON-able), also written to ``results.json``.
        summary: the markdown text written to ``summary.md``.
        files: every file written, ``summary.md`` and ``results.json`` included.
    """

    name: str
    out: Path
    numbers: dict
    summary: str
    files: list[Path] = field(default_factory=list)


def prepare_out(out: str | Path) -> Path:
    """Create the run folder (and its parents); refuse a path that is a file."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"Expected a directory for the lab's output, got the file {out}")
    out.mkdir(parents=True, exist_ok=True)
    return out


def finish(name: str, out: Path, numbers: dict, summary: str, figures: Sequence[Path]) -> LabResult:
    """Write summary.md and results.json next to the figures and return the result."""
    summary_path = out / "summary.md"
    summary_path.write_text(summary.rstrip() + "\n", encoding="utf-8")
    json_path = out / "results.json"
    json_path.write_text(json.dumps(numbers, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return LabResult(name, out, numbers, summary, [*figures, summary_path, json_path])


def new_figure(ncols: int = 1, width: float = 6.4, height: float = 4.4) -> tuple[Figure, list]:
    """A figure with ``ncols`` side-by-side axes, sized for the docs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


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


def interleaved_times(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    setup: dict[str, Callable[[], object]] | None = None,
) -> dict[str, dict[str, float]]:
    """Wall time of each ``fn()`` in seconds: the best and the median over ``rounds`` rounds.

    Every round calls every function once, in turn, so a burst of other work on a shared machine
    slows all of them alike rather than one; the best time is the least disturbed estimate of the
    intrinsic cost. One untimed round first warms up caches and lazy initialisation. ``setup[name]``,
    if given, runs untimed before each call of ``fns[name]``.
    """
    setup = setup or {}
    for name, fn in fns.items():
        setup.get(name, _nothing)()
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            setup.get(name, _nothing)()
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: {"best_s": min(v), "median_s": statistics.median(v)} for name, v in samples.items()}


def _nothing() -> None:
    pass


@contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
