"""The README's Python runs as written: its code blocks in order (one namespace, as a reader pastes
them), and each one-line example of its options table builds a module that trains a step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import scratchrnn

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)
EXAMPLES = re.findall(r"`((?:RNN|GRU)\(10, 20[^`]*\))`", README)


def test_the_readme_has_python_blocks_and_option_examples():
    assert len(BLOCKS) >= 2 and len(EXAMPLES) >= 5


def test_the_readme_python_blocks_run_in_order():
    namespace: dict = {}
    for block in BLOCKS:
        exec(compile(block, "README.md", "exec"), namespace)


@pytest.mark.parametrize("example", EXAMPLES)
def test_each_option_example_builds_a_module_that_trains(example):
    module = eval(example, {"RNN": scratchrnn.RNN, "GRU": scratchrnn.GRU})
    output, h_n = module(torch.randn(5, 3, 10))
    assert output.shape == (5, 3, 20) and h_n.shape == (1, 3, 20)
    output.sum().backward()
    assert all(p.grad is not None for p in module.parameters())
