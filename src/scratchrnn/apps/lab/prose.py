"""Numbers that cannot drift: the tutorials' figures, tied to the results they were measured in.

Two markers, HTML comments (invisible once the markdown is rendered), tie the prose to the files
the lab writes into ``img/<experiment>/``:

- ``NUMBER<!-- = EXPERIMENT/KEY/KEY... -->`` after a number: it is that entry of
  ``img/EXPERIMENT/results.json`` (a list entry by its index). ``A / B`` (two such paths) is their
  ratio. An optional ``|SPEC`` at the end is a Python format spec (``|,`` writes 120,000; ``|.2f``);
  without it a float is written as the summaries write it (:func:`fmt`: 3 significant digits) and an
  integer as it is.
- ``<!-- table: EXPERIMENT K -->`` on the line before a table: the table is the K-th table (from 1)
  of ``img/EXPERIMENT/summary.md``, cell for cell.

:func:`check` lists every marked number or table that disagrees with the results (the tutorials'
test runs it), and :func:`refresh` rewrites them from the results (``lab all`` runs it on the
tutorials and pages next to the folder it wrote, and the README above them, so rerunning the lab
updates the prose). A ``--quick`` run (toy sizes) is refused a folder that has such prose beside it.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from scratchrnn.apps.bench.harness import fmt

__all__ = ["check", "documents", "marked_numbers", "marked_tables", "refresh", "refresh_files"]

_NUMBER = re.compile(r"([-+]?[0-9][0-9,]*(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)<!-- = (.+?) -->")
_TABLE = re.compile(r"<!-- table: (\S+) (\d+) -->\n((?:\|.*\n)+)")
_ANY_TABLE = re.compile(r"(?:^\|.*\n)+", flags=re.M)


@cache
def _results(img: Path, experiment: str) -> dict:
    return json.loads((img / experiment / "results.json").read_text(encoding="utf-8"))


def _lookup(img: Path, path: str) -> float:
    experiment, *keys = path.strip().split("/")
    value = _results(img, experiment)
    for key in keys:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def value_of(img: Path, spec: str) -> str:
    """The text a marker's ``spec`` ('EXP/KEY/..., or A / B, then |FORMAT') stands for."""
    expression, _, form = spec.partition("|")
    parts = expression.split(" / ")
    value = _lookup(img, parts[0]) if len(parts) == 1 else _lookup(img, parts[0]) / _lookup(img, parts[1])
    if form:
        return format(value, form)
    return fmt(value) if isinstance(value, float) else str(value)


def marked_numbers(text: str) -> list[tuple[str, str]]:
    """Every (number as written, marker spec) of ``text``."""
    return _NUMBER.findall(text)


def marked_tables(text: str) -> list[tuple[str, int, str]]:
    """Every (experiment, K, table as written) of ``text``."""
    return [(exp, int(k), table) for exp, k, table in _TABLE.findall(text)]


def summary_table(img: Path, experiment: str, k: int) -> str:
    """The K-th markdown table (from 1) of ``img/EXPERIMENT/summary.md``."""
    summary = (img / experiment / "summary.md").read_text(encoding="utf-8")
    return _ANY_TABLE.findall(summary)[k - 1]


def check(text: str, img: str | Path) -> list[str]:
    """What in ``text`` disagrees with the results in ``img``: one line per marked number or table."""
    img = Path(img)
    _results.cache_clear()
    wrong = [
        f"{written} should be {want} ({spec})"
        for written, spec in marked_numbers(text)
        if written != (want := value_of(img, spec))
    ]
    wrong += [
        f"the table marked {experiment} {k} differs from table {k} of {experiment}/summary.md"
        for experiment, k, table in marked_tables(text)
        if table != summary_table(img, experiment, k)
    ]
    return wrong


def refresh(text: str, img: str | Path) -> str:
    """``text`` with every marked number and table rewritten from the results in ``img``."""
    img = Path(img)
    _results.cache_clear()
    text = _NUMBER.sub(lambda m: f"{value_of(img, m[2])}<!-- = {m[2]} -->", text)
    return _TABLE.sub(lambda m: f"<!-- table: {m[1]} {m[2]} -->\n{summary_table(img, m[1], int(m[2]))}", text)


def documents(img: str | Path) -> list[Path]:
    """The prose whose marked numbers come from the folder ``img``: where ``img`` is ``docs/img``,
    the pages of ``docs/`` (the tutorials and the pages moved out of the README) and the project's
    README.md above them; elsewhere (``runs/lab``), none."""
    img = Path(img)
    if not any(img.parent.glob("tutorial*.md")):
        return []
    readme = img.parent.parent / "README.md"
    return sorted(img.parent.glob("*.md")) + ([readme] if readme.is_file() else [])


def refresh_files(img: str | Path) -> list[Path]:
    """Refresh the marked numbers of :func:`documents` from ``img``; the paths rewritten."""
    changed = []
    for path in documents(img):
        before = path.read_text(encoding="utf-8")
        after = refresh(before, img)
        if after != before:
            path.write_text(after, encoding="utf-8")
            changed.append(path)
    return changed
