"""The README's commands are commands: every ``scratchrnn ...`` line of its code blocks parses with
the command line's own parser (no unknown flag, no bad choice), so an example cannot drift from
the flags it shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from scratchrnn.apps.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def commands(path: Path) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("scratchrnn ")]


@pytest.mark.parametrize("line", commands(ROOT / "README.md"))
def test_every_readme_command_parses(line):
    args, extra = build_parser().parse_known_args(shlex.split(line)[1:])
    assert extra == []
    assert args.command


def test_the_readme_shows_each_command():
    shown = {line.split()[1] for line in commands(ROOT / "README.md")}
    assert shown >= {"train", "sample", "eval", "lab", "inspect"}
