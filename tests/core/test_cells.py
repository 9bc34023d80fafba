"""The cell as a plug-in: every built-in cell passes scratchrnn.testing.check_cell (gradcheck,
gradgradcheck, and outputs, gradients and tangents equal to autograd run over its own steps); the
registry; the stack's plan; and examples/custom_cell.py (an IndRNN brought by a user) runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import scratchrnn
from scratchrnn.core import cells
from scratchrnn.core.stack import Layout, Plan, Step
from scratchrnn.testing import check_cell

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLE = Path(__file__).parents[2] / "examples" / "custom_cell.py"


@pytest.mark.parametrize("name", ["rnn_tanh", "rnn_relu", "gru"])
def test_built_in_cells_pass_check_cell(name, diffs):
    for kind, margin in check_cell(cells.get(name)).items():
        diffs(f"float64 max abs, {name} vs autograd over its steps: {kind.split()[0]}", margin)


def test_registry_names_each_cell_once():
    assert {"rnn_tanh", "rnn_relu", "gru"} <= set(cells.CELLS)
    with pytest.raises(ValueError, match="registered already"):
        cells.register(cells.GRU())
    with pytest.raises(ValueError, match="Unknown cell 'lstm'"):
        cells.get("lstm")
    with pytest.raises(ValueError, match="has no name"):
        cells.register(cells.Cell())


def test_a_cell_with_two_states_is_refused_until_the_stack_carries_them():
    class TwoStates(cells.Cell):
        name, states = "two_states", ("h", "c")

    with pytest.raises(NotImplementedError, match="one state per layer"):
        scratchrnn.Recurrent(TwoStates(), 3, 4)
    assert "two_states" not in cells.CELLS


def test_plan_of_a_packed_batch():
    plan = Plan([3, 2, 2, 1])  # lengths 4, 3, 1
    assert not plan.padded and plan.rows == 8
    assert plan.steps(False) == [Step(0, 3, 0, 2), Step(1, 2, 2, 2), Step(2, 2, 2, 1), Step(3, 1, 1, 0)]
    # reverse: each sequence starts at its own last step, from h0
    assert plan.steps(True) == [Step(3, 1, 0, 1), Step(2, 2, 1, 2), Step(1, 2, 2, 2), Step(0, 3, 2, 0)]
    assert Plan([2, 2]).padded


def test_layout_walks_layers_and_directions_in_nn_order():
    layout = Layout(num_layers=2, bidirectional=True, bias=False)
    assert list(layout.walk()) == [(0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 3)]
    assert list(layout.walk(reverse_layers=True)) == [(1, 0, 2), (1, 1, 3), (0, 0, 0), (0, 1, 1)]
    assert layout.weights(list("abcdefgh"), 3) == ("g", "h", None, None)
    assert layout.suffix(1, 1) == "_l1_reverse" and layout.input_size(1, 3, 4) == 8


def test_custom_cell_example_runs():
    result = subprocess.run([sys.executable, str(EXAMPLE), "--quick"], capture_output=True, text=True,
                            check=True)
    assert "check_cell" in result.stdout and "loop on autograd" in result.stdout
