"""What every experiment shares: its result, the files it writes, plotting.

Timing, tables and the machine's description come from :mod:`scratchrnn.apps.bench.harness`,
shared with the benchmarks.

Plots use matplotlib's object-oriented API (``Figure`` + ``savefig``) rather than pyplot, so no
backend is selected globally and nothing opens a window.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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
