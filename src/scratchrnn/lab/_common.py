"""What every experiment shares: its result, the files it writes, plotting and timing helpers.

Plots use matplotlib's object-oriented API (``Figure`` + ``savefig``) rather than pyplot, so no
backend is selected globally and nothing opens a window.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure


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
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats are written with 3 significant digits."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return fmt(v)
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(v: float) -> str:
    """3 significant digits, scientific notation outside [1e-3, 1e4)."""
    if v == 0 or not math.isfinite(v):
        return str(v)
    if 1e-3 <= abs(v) < 1e4:
        return f"{v:.3g}"
    return f"{v:.2e}"


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """The median wall time of ``fn()`` in seconds over ``repeats`` runs, after ``warmup`` runs.

    The median, not the mean: on a shared machine a few runs are slowed by other work.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
