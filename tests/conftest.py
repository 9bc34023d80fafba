"""Shared test plumbing: fixtures used by several modules, and a record of the largest difference
seen against each oracle.

The parity tests report every comparison to the session-wide ``diffs`` fixture; the terminal
summary then prints the worst case per category, so a run states the margin it passed by, not
just that it passed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from scratchrnn.core import accel
from scratchrnn.lm.data import read_text

_LARGEST: dict[str, float] = {}


def _record(category: str, value: float) -> None:
    _LARGEST[category] = max(value, _LARGEST.get(category, 0.0))


@pytest.fixture(scope="session")
def diffs() -> Callable[[str, float], None]:
    """``diffs(category, value)`` notes a difference; the largest per category is reported."""
    return _record


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run a module's tiny problems on one thread (``pytestmark = pytest.mark.usefixtures(...)``):
    intra-op threads only add overhead at this size, and on a busy machine their spin-waits made
    the suite ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> str:
    """The path of a small text file: the first 6,000 characters of the bundled corpus."""
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(read_text()[:6000])
    return str(path)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _LARGEST:
        return
    terminalreporter.section("largest differences seen")
    for category, value in sorted(_LARGEST.items()):
        terminalreporter.write_line(f"{category:<48} {value:.3e}")


@pytest.fixture(params=["C", "torch"], ids=["C-loops", "torch-loops"])
def loops(request):
    """Run a test through each implementation of the per-step loops: the C one (the default on
    CPU when it compiles) and the PyTorch one (the reference, and the path on GPUs)."""
    if request.param == "C" and not accel.available():
        pytest.skip("the C loops are not available here")
    previous = accel.available()
    accel.set_enabled(request.param == "C")
    yield request.param
    accel.set_enabled(previous)
