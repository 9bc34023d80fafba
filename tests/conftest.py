"""Shared test plumbing: a record of the largest difference seen against each oracle.

The parity tests report every comparison to the session-wide ``diffs`` fixture; the terminal
summary then prints the worst case per category, so a run states the margin it passed by, not
just that it passed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

_LARGEST: dict[str, float] = {}


def _record(category: str, value: float) -> None:
    _LARGEST[category] = max(value, _LARGEST.get(category, 0.0))


@pytest.fixture(scope="session")
def diffs() -> Callable[[str, float], None]:
    """``diffs(category, value)`` notes a difference; the largest per category is reported."""
    return _record


def pytest_terminal_summary(terminalreporter) -> None:
    if not _LARGEST:
        return
    terminalreporter.section("largest differences seen")
    for category, value in sorted(_LARGEST.items()):
        terminalreporter.write_line(f"{category:<48} {value:.3e}")
