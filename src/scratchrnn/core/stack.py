r"""The stack's bookkeeping, knowing no equation: the plan of a call's steps and the weights' layout.

:class:`Plan` — the steps of one sequence batch, padded or packed, built once per call and read by
every layer and direction (and by the C loops, through its ``sizes``). Every sequence is held
time-major and flattened: a (rows, features) tensor whose rows are step 0's batch, then step 1's,
…, with ``sizes[t]`` rows at step t. Padded input has sizes = [N] * T; a PackedSequence already has
this layout (its sequences sorted by length, so the sizes never grow). Running a direction visits the
steps in ``steps(reverse)``'s order; at each, rows [0, carried) carry on from the step visited before,
rows [carried, size) start from h0 (the reverse direction of packed input: shorter sequences start
later), and rows [kept, size) end there (their state is h_n; the forward direction of packed input).

:class:`Layout` — layers × directions × weights × the index into hx: which four (or two, without
bias) of the flat weight list belong to a layer and direction, in torch.nn's order, and their names.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["Layout", "Plan", "Step"]


class Step(NamedTuple):
    """One step of a direction, in the order it runs."""

    t: int  # the step's index in the flattened layout
    size: int  # rows at this step
    carried: int  # rows [0, carried) carry on from the step run before; [carried, size) start from h0
    kept: int  # rows [0, kept) carry on into the step run next; [kept, size) end here


class Plan:
    """The steps of one call's sequences (see the module docstring), from their ``batch_sizes``."""

    def __init__(self, batch_sizes: Sequence[int]) -> None:
        self.sizes = list(batch_sizes)
        self.N = self.sizes[0]
        self.padded = self.sizes[0] == self.sizes[-1]  # every step has all N rows (sizes never grow)
        self.rows = self.N * len(self.sizes) if self.padded else sum(self.sizes)
        # Each direction's steps are listed on first use: the C loops read only the sizes, and a
        # list of T steps costs more than a short call at T = 1000.
        self._steps: dict[bool, list[Step]] = {}

    def _order(self, reverse: bool) -> list[Step]:
        order = list(reversed(range(len(self.sizes)))) if reverse else list(range(len(self.sizes)))
        sizes = [self.sizes[t] for t in order]
        carried = [0, *(min(b, b_prev) for b_prev, b in pairwise(sizes))]
        kept = [*carried[1:], 0]
        return [Step(*s) for s in zip(order, sizes, carried, kept, strict=True)]

    def steps(self, reverse: bool) -> list[Step]:
        """The steps in the order a direction runs them."""
        if reverse not in self._steps:
            self._steps[reverse] = self._order(reverse)
        return self._steps[reverse]

    def split(self, rows: Tensor) -> tuple[Tensor, ...]:
        """(rows, F) → one (sizes[t], F) view per step t."""
        return rows.split(self.sizes)

    def h_prev(self, out: Tensor, h0: Tensor, reverse: bool) -> Tensor:
        """h_{t−1} of every row of ``out`` (rows, H), in the same layout: out shifted by one step in
        the direction's order, h0 where a sequence starts."""
        out_steps = self.split(out)
        pieces = {}
        previous = None
        for step in self.steps(reverse):
            rows = [out_steps[previous][: step.carried]] if step.carried else []
            pieces[step.t] = rows + ([h0[step.carried : step.size]] if step.carried < step.size else [])
            previous = step.t
        rows = [p for t in range(len(self.sizes)) for p in pieces[t]]
        return torch.cat(rows) if rows else out[:0]  # N = 0: no rows

    def h_prev_at(self, out_steps: Sequence[Tensor], h0: Tensor, reverse: bool, k: int) -> Tensor:
        """h_{t−1} (size, H) of the k-th step run, from the output's steps and h0: a view where all
        its rows carry on, or all start from h0 (always, for padded input)."""
        steps = self.steps(reverse)
        c, b = steps[k].carried, steps[k].size
        if c == 0:
            return h0[:b]
        previous = out_steps[steps[k - 1].t]
        return previous[:b] if c == b else torch.cat([previous[:c], h0[c:b]])

    def shifted(self, reverse: bool) -> tuple[slice, slice, slice]:
        """Padded input only: (the rows starting from h0, the rows carried on, the rows they carry
        on from), so that h_{t−1} of the carried rows is a view of the output."""
        N, rows = self.N, self.rows
        if reverse:
            return slice(rows - N, rows), slice(0, rows - N), slice(N, rows)
        return slice(0, N), slice(N, rows), slice(0, rows - N)

    def add_final_(self, dh: Tensor, dh_n: Tensor, reverse: bool) -> None:
        """dh (rows, H) += ∂L/∂h_n at each sequence's last step, in place."""
        if self.padded:
            last = slice(0, self.N) if reverse else slice(self.rows - self.N, self.rows)
            dh[last].add_(dh_n)
            return
        dh_steps = self.split(dh)
        for step in self.steps(reverse):
            if step.kept < step.size:
                dh_steps[step.t][step.kept :].add_(dh_n[step.kept : step.size])


class Layout(NamedTuple):
    """Layers × directions × weights: the flat weight list's order (torch.nn's) and hx's index."""

    num_layers: int
    bidirectional: bool
    bias: bool

    @property
    def dirs(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def per(self) -> int:
        """Weights per layer and direction: W_ih, W_hh[, b_ih, b_hh]."""
        return 4 if self.bias else 2

    def walk(self, reverse_layers: bool = False) -> Iterator[tuple[int, int, int]]:
        """(layer, direction, index) for every layer and direction, first layer first (or last
        first); index = layer · dirs + direction, as in hx and h_n."""
        layers = reversed(range(self.num_layers)) if reverse_layers else range(self.num_layers)
        for layer in layers:
            for d in range(self.dirs):
                yield layer, d, layer * self.dirs + d

    def weights(self, flat: Sequence, index: int) -> tuple:
        """(W_ih, W_hh, b_ih, b_hh) of layer-and-direction ``index``, the biases None without bias."""
        w = flat[index * self.per : (index + 1) * self.per]
        return (w[0], w[1], w[2], w[3]) if self.bias else (w[0], w[1], None, None)

    def input_size(self, layer: int, input_size: int, hidden_size: int) -> int:
        """D for the first layer, the layer below's output width dirs · H for the others."""
        return input_size if layer == 0 else self.dirs * hidden_size

    def suffix(self, layer: int, direction: int) -> str:
        """torch.nn's parameter name suffix: ``_l{layer}``, ``_reverse`` for the second direction."""
        return f"_l{layer}" + ("_reverse" if direction == 1 else "")
