"""Checks for a cell of one's own: :func:`check_cell`.

    >>> from scratchrnn.testing import check_cell
    >>> check_cell(MyCell())  # raises AssertionError with the failing quantity, else returns the margins

A cell's hand-written step backward and step tangent are checked two ways, in float64, through a
stack of it (2 layers, both directions, padded and packed input): ``torch.autograd.gradcheck`` and
``gradgradcheck`` (finite differences), and a comparison with autograd run over the cell's own
forward (:func:`autograd_stack`: the same steps, on fresh tensors each, so that autograd can
differentiate them), of the outputs, every gradient and the forward-mode tangents.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import pack_padded_sequence

from scratchrnn.core import cells
from scratchrnn.core.ops import RNNConfig, rnn
from scratchrnn.core.stack import Layout, Plan

__all__ = ["autograd_stack", "check_cell"]

F64 = torch.float64


def autograd_stack(cell: cells.Cell, x: Tensor, hx: Tensor, weights: list[Tensor], batch_sizes: list[int],
                   layout: Layout) -> tuple[Tensor, Tensor]:
    """The stack of ``cell`` written for autograd: (output (rows, dirs·H), h_n). Each step projects
    its own rows and writes a fresh tensor, so that no tensor autograd saved is written again."""
    plan, H = Plan(batch_sizes), hx.shape[-1]
    layer_in, h_n = x, [None] * len(hx)
    for layer in range(layout.num_layers):
        directions = []
        for d in range(layout.dirs):
            idx = layer * layout.dirs + d
            W_ih, W_hh, b_ih, b_hh = layout.weights(weights, idx)
            constants = cell.step_constants(W_hh, b_ih, b_hh)
            x_steps, h_steps, h_prev = plan.split(layer_in), [None] * len(plan.sizes), hx[idx]
            last = [None] * hx.shape[1]  # each sequence's last state, row by row
            for step in plan.steps(reverse=d == 1):
                t, b, c = step.t, step.size, step.carried
                pieces = []
                for rows, h_rows in ((slice(0, c), h_prev[:c]), (slice(c, b), hx[idx][c:b])):
                    if rows.stop > rows.start:
                        h_t = x.new_empty(rows.stop - rows.start, H)
                        cell.step(cell.project(x_steps[t][rows], W_ih, b_ih, h_t), h_rows, constants, h_t)
                        pieces.append(h_t)
                h_prev = h_steps[t] = torch.cat(pieces)
                for row in range(step.kept, b):
                    last[row] = h_prev[row]
            h_n[idx] = torch.stack(last)
            directions.append(torch.cat(h_steps))
        layer_in = torch.cat(directions, 1)
    return layer_in, torch.stack(h_n)


def _through_the_operator(batch_sizes, config, x, hx, *weights) -> tuple[Tensor, Tensor]:
    output, h_n = rnn(x, hx, list(weights), [], batch_sizes, config)
    return output.reshape(-1, output.shape[-1]), h_n


def _through_autograd(cell, sizes, layout, x, hx, *weights) -> tuple[Tensor, Tensor]:
    return autograd_stack(cell, x.reshape(-1, x.shape[-1]), hx, list(weights), sizes, layout)


def check_cell(cell: cells.Cell, input_size: int = 3, hidden_size: int = 4, *, num_layers: int = 2,
               bidirectional: bool = True, tol: float = 1e-10, seed: int = 0) -> dict[str, float]:
    """Checks ``cell``'s step backward and step tangent (see the module docstring); registers the
    cell if it is not. Returns the largest difference from autograd of each kind; raises
    AssertionError where gradcheck fails or a difference exceeds ``tol``."""
    if cells.CELLS.get(cell.name) is not cell:
        cells.register(cell)
    layout = Layout(num_layers, bidirectional, True)
    generator = torch.Generator().manual_seed(seed)
    weights = []
    for layer, _, _ in layout.walk():
        D = layout.input_size(layer, input_size, hidden_size)
        shapes = cell.parameter_shapes(D, hidden_size, True).values()
        layer_weights = [torch.empty(shape, dtype=F64) for shape in shapes]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
            cell.reset_parameters_(layer_weights, hidden_size)
        weights += layer_weights
    margins: dict[str, float] = {}
    for packed in (False, True):
        x = torch.randn(5, 3, input_size, dtype=F64, generator=generator)
        hx = torch.randn(num_layers * layout.dirs, 3, hidden_size, dtype=F64, generator=generator)
        batch_sizes = None
        if packed:
            sequence = pack_padded_sequence(x, [5, 3, 2])
            x, batch_sizes = sequence.data, sequence.batch_sizes
        config = RNNConfig(num_layers, bidirectional, True, cell.name)
        sizes = batch_sizes.tolist() if packed else [3] * 5

        ours = partial(_through_the_operator, batch_sizes, config)
        theirs = partial(_through_autograd, cell, sizes, layout)
        leaves = [t.clone().requires_grad_() for t in (x, hx, *weights)]
        kind = "packed" if packed else "padded"
        assert gradcheck(ours, leaves), f"{cell.name}: gradcheck failed ({kind})"
        assert gradgradcheck(ours, leaves), f"{cell.name}: gradgradcheck failed ({kind})"
        upstream = [torch.randn(o.shape, dtype=F64, generator=generator) for o in ours(*leaves)]
        tangents = [torch.randn(t.shape, dtype=F64, generator=generator) for t in leaves]
        comparisons = {
            "forward": (ours(*leaves), theirs(*leaves)),
            "backward": (torch.autograd.grad(ours(*leaves), leaves, upstream),
                         torch.autograd.grad(theirs(*leaves), leaves, upstream)),
            # the reference's tangent by double backward: it needs no forward mode of its steps
            "tangent": (torch.func.jvp(ours, tuple(leaves), tuple(tangents))[1],
                        torch.autograd.functional.jvp(theirs, tuple(leaves), tuple(tangents))[1]),
        }
        for name, (got, want) in comparisons.items():
            worst = max((a - b).abs().max().item() for a, b in zip(got, want, strict=True))
            margins[f"{name} ({kind})"] = worst
            assert worst <= tol, f"{cell.name}: {name} ({kind}) differs from autograd's by {worst:.3g}"
    return margins
