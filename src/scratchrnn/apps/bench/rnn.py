"""The benchmark room: scratchrnn.RNN side by side with torch.nn.RNN, the naive loop and the GEMM floor.

Nothing in the library imports this module; ``scratchrnn bench`` (cli.py) does. It returns markdown
and never prints: every number in the report comes from a measurement made by this code.

Five variants of the same RNN, with the same weights and the same input:

    scratchrnn   scratchrnn.RNN: hand-written forward and BPTT, one autograd node
    nn.RNN       torch.nn.RNN, whose CPU path runs a C++ step loop and whose backward is autograd
    naive        the tutorial's time-major loop on autograd (scratchrnn.core.reference.time_major_rnn)
    floor        the GEMM floor: the very GEMM calls scratchrnn.RNN makes (the hoisted input
                 projection, one h_{t-1} W_hhᵀ per step; in the backward one da_t W_hh per step,
                 then dW_ih, dW_hh and dx as whole-sequence GEMMs) into preallocated buffers, one
                 Python call per step and no elementwise work: it computes a *linear* RNN exactly
    batched      the same GEMMs with the per-step ones batched (one baddbmm / bmm per layer and
                 direction) from a real run's h_t and da_t: the arithmetic alone, no call per step

and two modes: ``fwd`` (forward under torch.no_grad()) and ``fwd+bwd`` (forward, loss =
output.sum(), backward, with the input requiring grad).

Timing is done in one process in interleaved rounds: a warm-up call of every (shape, mode,
variant) that also calibrates how many calls make one sample, then ``rounds`` rounds, each timing
every variant of every cell back to back (in a rotated order, so no variant always goes first).
A sample is the mean time per call; a cell's figure is the median of its samples over the rounds.

Peak memory is measured for one training step per variant, each in its own fresh subprocess (see
:func:`measure_memory` for the method).

The GRU rows (scratchrnn.GRU against nn.GRU, bench/gru.py) are timed in the same rounds, over the
same shapes. The targets the report checks are the project's, read from benchmarks/targets.toml
(:func:`load_targets`), not written here.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from scratchrnn.apps.bench import autocast as autocast_bench
from scratchrnn.apps.bench import gru as gru_bench
from scratchrnn.apps.bench import peers as peer_bench
from scratchrnn.apps.bench.gru import GruCase
from scratchrnn.apps.bench.harness import (
    fmt_ms,
    interleaved_samples,
    machine_info,
    md_table,
    num_threads,
    spread,
)
from scratchrnn.apps.ours import NO_GRU
from scratchrnn.core.functional import rnn_forward
from scratchrnn.core.modules import RNN
from scratchrnn.core.reference import time_major_rnn

VARIANTS = ("scratchrnn", "nn.RNN", "naive", "floor", "batched")
MEMORY_VARIANTS = ("scratchrnn", "nn.RNN", "naive", "floor")
MODES = ("fwd", "fwd+bwd")
CELLS = ("rnn", "gru")  # the RNN rows and the GRU rows
TARGETS_FILE = Path("benchmarks") / "targets.toml"  # the project's goals, from the repository root
TARGET_KEYS = {
    "rnn": ("fwd_bwd_geomean_speedup", "fwd_bwd_min_speedup", "fwd_min_speedup", "memory_max_ratio",
            "floor_max_ratio", "batched_max_ratio", "peers_min_ratio"),
    "gru": ("fwd_min_speedup", "fwd_bwd_min_speedup", "memory_max_ratio"),
}


def load_targets(path: Path) -> dict:
    """The project's goals from a targets file (benchmarks/targets.toml): ``threads`` and the
    thresholds of the [rnn] and [gru] tables, each a number; a missing or unknown key is an error."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise RuntimeError(f"reading {path} needs Python 3.11 or later (tomllib)") from None
    with open(path, "rb") as f:
        data = tomllib.load(f)
    expected = {"threads", *TARGET_KEYS}
    if set(data) != expected:
        raise ValueError(f"{path}: expected the keys {sorted(expected)}, got {sorted(data)}")
    if not isinstance(data["threads"], int) or data["threads"] < 1:
        raise ValueError(f"{path}: threads must be a positive integer, got {data['threads']!r}")
    for table, keys in TARGET_KEYS.items():
        if set(data[table]) != set(keys):
            raise ValueError(f"{path}: [{table}] expected {sorted(keys)}, got {sorted(data[table])}")
        bad = {k: v for k, v in data[table].items() if not isinstance(v, int | float) or isinstance(v, bool)}
        if bad:
            raise ValueError(f"{path}: [{table}] thresholds must be numbers, got {bad}")
    return data


@dataclasses.dataclass(frozen=True)
class Shape:
    """One benchmark shape: T steps, N sequences, D inputs, H hidden units, L layers."""

    T: int
    N: int
    D: int
    H: int
    layers: int = 1
    bidirectional: bool = False

    def __str__(self) -> str:
        bi = ", bi" if self.bidirectional else ""
        return f"({self.T}, {self.N}, {self.D}, {self.H}, {self.layers}{bi})"

    @property
    def spec(self) -> str:
        """The form :meth:`parse` reads back: ``T,N,D,H,L`` or ``T,N,D,H,L,bi``."""
        bi = ",bi" if self.bidirectional else ""
        return f"{self.T},{self.N},{self.D},{self.H},{self.layers}{bi}"

    @classmethod
    def parse(cls, text: str) -> Shape:
        parts = [p.strip() for p in text.split(",")]
        bidirectional = len(parts) == 6 and parts[5] == "bi"
        if len(parts) not in (5, 6) or (len(parts) == 6 and not bidirectional):
            raise ValueError(f"a shape is T,N,D,H,L or T,N,D,H,L,bi; got {text!r}")
        try:
            sizes = [int(p) for p in parts[:5]]
        except ValueError:
            raise ValueError(f"a shape is T,N,D,H,L or T,N,D,H,L,bi of integers; got {text!r}") from None
        if min(sizes) < 1:
            raise ValueError(f"every size in a shape must be at least 1; got {text!r}")
        return cls(*sizes, bidirectional=bidirectional)


SHAPES = (
    Shape(100, 32, 64, 128, 1),
    Shape(100, 32, 128, 256, 2),
    Shape(500, 16, 32, 64, 1),
    Shape(50, 64, 256, 512, 1),
    Shape(1000, 1, 64, 128, 1),
    Shape(100, 32, 64, 128, 2, bidirectional=True),
)
MEMORY_SHAPE = Shape(1000, 32, 128, 256, 1)
QUICK_SHAPES = (Shape(6, 3, 4, 5, 1), Shape(4, 2, 3, 5, 2, bidirectional=True))
QUICK_MEMORY_SHAPE = Shape(20, 4, 8, 16, 1)


# --------------------------------------------------------------------------------------------
# The variants.
# --------------------------------------------------------------------------------------------


def naive_forward(x: Tensor, h0: Tensor, weights: Sequence[Tensor], shape: Shape) -> Tensor:
    """The naive loop's output for nn.RNN's flat weight list (always with biases).

    Unidirectional: the tutorial's time-major loop as it stands. Bidirectional stacks have no
    time-major form (layer l + 1 needs layer l's reverse direction, which ends at step 0), so each
    layer and direction is one call of the same loop, the reverse one on the time-flipped input.
    """
    cells = walk(weights, shape)
    if not shape.bidirectional:
        return time_major_rnn(x, h0, [(c.W_ih, c.W_hh, c.b_ih + c.b_hh) for c in cells])[0]
    layer_in, outs = x, []
    for c in cells:
        seq = layer_in if c.direction == 0 else layer_in.flip(0)
        out, _ = time_major_rnn(seq, h0[c.index : c.index + 1], [(c.W_ih, c.W_hh, c.b_ih + c.b_hh)])
        outs.append(out if c.direction == 0 else out.flip(0))
        if c.last_of_layer:
            layer_in, outs = torch.cat(outs, dim=-1), []
    return layer_in


@dataclasses.dataclass(frozen=True)
class LayerDirection:
    """One layer and direction of a stack, with its weights: what the variants below iterate over."""

    index: int  # layer · dirs + direction: its place in nn.RNN's weight list and in hx
    layer: int
    direction: int  # 0 forward in time, 1 reverse
    last_of_layer: bool  # the layer's last direction: its output is complete after this one
    cols: slice  # its H columns of the layer's (rows, dirs · H) output
    W_ih: Tensor  # (H, D_l)
    W_hh: Tensor  # (H, H)
    b_ih: Tensor  # (H,)
    b_hh: Tensor  # (H,)


def walk(weights: Sequence[Tensor], shape: Shape) -> list[LayerDirection]:
    """nn.RNN's flat weight list (4 per layer and direction, biases included) as the stack's
    layers × directions, in nn's order (layer 0 forward, layer 0 reverse, layer 1 ...).

    The benchmark's one copy of this walk (issue 17 item 8; it was written out three times here).
    The core's layout object of the cell refactor (issue 17 item 2) will describe the same thing
    for every cell; when it lands, this becomes a thin use of it.
    """
    dirs = 2 if shape.bidirectional else 1
    if len(weights) != 4 * shape.layers * dirs:
        raise ValueError(f"expected {4 * shape.layers * dirs} weights for {shape}, got {len(weights)}")
    cells = []
    for index in range(shape.layers * dirs):
        layer, direction = divmod(index, dirs)
        W_ih, W_hh, b_ih, b_hh = weights[4 * index : 4 * index + 4]
        cells.append(LayerDirection(
            index=index, layer=layer, direction=direction, last_of_layer=direction == dirs - 1,
            cols=slice(direction * shape.H, (direction + 1) * shape.H),
            W_ih=W_ih, W_hh=W_hh, b_ih=b_ih, b_hh=b_hh,
        ))
    return cells


@dataclasses.dataclass
class FloorCell:
    """One layer and direction of :class:`GemmFloor`: its weights, buffers and per-step views."""

    layer: int
    first_back: bool  # the first of the layer's directions that the backward runs (it writes dx)
    W_ih: Tensor  # (H, D_l)
    W_hh: Tensor  # (H, H)
    b: Tensor  # (H,) b_ih + b_hh
    layer_in: Tensor  # (rows, D_l)
    out: Tensor  # (rows, H), a column slice of the layer's output
    fwd_steps: list[tuple[Tensor, Tensor]]  # (a_t, h_{t-1}) in processing order
    bwd_steps: list[tuple[Tensor, Tensor, Tensor]]  # (dout_{t-1}, da_t, da_{t-1}), BPTT order
    da: Tensor  # (rows, H)
    da_last: Tensor  # da of the last step processed, which has no successor
    dout_last: Tensor
    da_first: Tensor  # da of the first step processed: its dh_next is ∂L/∂h_0
    dh0: Tensor  # (N, H)
    dW_ih: Tensor
    dW_hh: Tensor
    da_h0: Tensor  # the rows of da whose h_{t-1} is h0
    da_rest: Tensor  # the other rows
    out_prev: Tensor  # their h_{t-1}: out shifted by one step


@dataclasses.dataclass
class BatchedCell:
    """One layer and direction of :class:`BatchedGemms`."""

    layer: int
    first_back: bool
    W_ih: Tensor  # (H, D_l)
    W_hh_steps: Tensor  # (T, H, H): W_hh expanded over the steps (a view), for bmm
    b: Tensor
    layer_in: Tensor  # (rows, D_l)
    out: Tensor  # (rows, H)
    h_prev: Tensor  # (T, N, H): h_{t-1} of every step
    h_prev_rows: Tensor  # (rows, H): the same, flattened
    da: Tensor  # (rows, H)
    dh_next: Tensor  # (T, N, H)
    dW_ih: Tensor
    dW_hh: Tensor


class GemmFloor:
    """The GEMMs of scratchrnn.RNN's forward and backward and nothing else.

    Without the activation the recurrence is linear, a_t = x_t W_ihᵀ + b + a_{t-1} W_hhᵀ, and its
    BPTT needs no elementwise work either: da_t = dout_t + da_{t+1} W_hh is one addmm, exactly the
    call scratchrnn makes per step. So this computes a real thing, a linear RNN and its gradients
    for loss = output.sum(), which the tests check against autograd. Every buffer is allocated
    here, once, and every step's views are made here, so the timed loops are one call per step.
    (The bias gradients, a reduction rather than a GEMM, are left out.)

    Args:
        weights: nn.RNN's flat weight list for the shape (with biases).
        x: (T, N, D) input.
    """

    def __init__(self, weights: Sequence[Tensor], x: Tensor, shape: Shape) -> None:
        T, N, H = shape.T, shape.N, shape.H
        dirs = 2 if shape.bidirectional else 1
        rows = T * N
        self.shape = shape
        self.x = x.reshape(rows, x.shape[-1])  # (rows, D), time-major
        self.h0 = x.new_zeros(N, H)
        cells = walk([w.detach() for w in weights], shape)
        self.outs = [x.new_empty(rows, dirs * H) for _ in range(shape.layers)]  # (rows, dirs*H)
        self.dxs = [x.new_empty(rows, c.W_ih.shape[1]) for c in cells if c.direction == 0]  # (rows, D_l)
        self.dout = x.new_ones(rows, dirs * H)  # ∂(output.sum())/∂output
        self.cells = []
        for cell in cells:
            layer, d, cols, W_ih, W_hh = cell.layer, cell.direction, cell.cols, cell.W_ih, cell.W_hh
            out = self.outs[layer][:, cols]
            layer_in = self.x if layer == 0 else self.outs[layer - 1]
            dout = self.dout[:, cols] if layer == shape.layers - 1 else self.dxs[layer + 1][:, cols]
            da = x.new_empty(rows, H)  # contiguous, as scratchrnn's da
            order = list(range(T)) if d == 0 else list(range(T - 1, -1, -1))
            a_steps, da_steps, dout_steps = out.split(N), da.split(N), dout.split(N)
            h_prevs = [self.h0] + [a_steps[t] for t in order[:-1]]
            # padded input: h_{t-1} of every row but the first step's is `out` shifted by one step
            first, rest = (
                (slice(0, N), slice(N, rows)) if d == 0 else (slice(rows - N, rows), slice(0, rows - N))
            )
            prev = slice(0, rows - N) if d == 0 else slice(N, rows)
            self.cells.append(
                FloorCell(
                    layer=layer, first_back=cell.last_of_layer, W_ih=W_ih, W_hh=W_hh, b=cell.b_ih + cell.b_hh,
                    layer_in=layer_in, out=out,
                    fwd_steps=[(a_steps[t], h) for t, h in zip(order, h_prevs, strict=True)],
                    bwd_steps=[
                        (dout_steps[order[k - 1]], da_steps[order[k]], da_steps[order[k - 1]])
                        for k in range(T - 1, 0, -1)
                    ],
                    da=da, da_last=da_steps[order[-1]], dout_last=dout_steps[order[-1]],
                    da_first=da_steps[order[0]], dh0=x.new_empty(N, H),
                    dW_ih=torch.empty_like(W_ih), dW_hh=torch.empty_like(W_hh),
                    da_h0=da[first], da_rest=da[rest], out_prev=out[prev],
                )
            )

    def forward(self) -> Tensor:
        """The linear RNN's output (rows, dirs * H), written into the preallocated buffers."""
        for c in self.cells:
            torch.addmm(c.b, c.layer_in, c.W_ih.t(), out=c.out)  # the input projection
            W_hh_T = c.W_hh.t()
            for a_t, h_prev in c.fwd_steps:
                a_t.addmm_(h_prev, W_hh_T)  # a_t += h_{t-1} W_hhᵀ
        return self.outs[-1]

    def backward(self) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        """BPTT of output.sum(): dx (rows, D) and, per layer and direction, (dW_ih, dW_hh, dh0)."""
        for c in reversed(self.cells):
            c.da_last.copy_(c.dout_last)  # the one non-GEMM call: the step with no successor
            for dout_prev, da_t, da_prev in c.bwd_steps:
                torch.addmm(dout_prev, da_t, c.W_hh, out=da_prev)  # da_{t-1} = dout_{t-1} + da_t W_hh
            torch.mm(c.da_first, c.W_hh, out=c.dh0)  # ∂L/∂h_0
            torch.mm(c.da_h0.t(), self.h0, out=c.dW_hh)  # dW_hh = Σ_t da_tᵀ h_{t-1}
            c.dW_hh.addmm_(c.da_rest.t(), c.out_prev)
            torch.mm(c.da.t(), c.layer_in, out=c.dW_ih)  # dW_ih = Σ_t da_tᵀ x_t
            dx = self.dxs[c.layer]
            if c.first_back:  # the backward runs the directions last to first
                torch.mm(c.da, c.W_ih, out=dx)  # dx_t = da_t W_ih
            else:
                dx.addmm_(c.da, c.W_ih)  # both directions read the same input
        return self.dxs[0], [(c.dW_ih, c.dW_hh, c.dh0) for c in self.cells]


class BatchedGemms:
    """Every GEMM of scratchrnn.RNN's forward and backward, with the per-step ones batched.

    The recurrence makes T small GEMMs per layer and direction, each waiting for the step before.
    Given the hidden states h_t and the BPTT's da_t of a real run, they no longer depend on each
    other: the forward's h_{t-1} W_hhᵀ of all steps is one baddbmm, the backward's da_t W_hh one
    bmm, then dW_hh, dW_ih and dx as in scratchrnn. The same GEMMs, the same shapes, the same
    FLOPs, with no per-step call at all: the time the arithmetic takes, a floor that a loop
    issuing one GEMM per step (in Python or in C) can approach but not beat by much.

    With ``layer_outputs`` and ``da`` from a real run, :meth:`forward` returns every layer's
    pre-activations a_t (so tanh of them is the RNN's output) and :meth:`backward` the exact
    dx, dW_ih and dW_hh (the tests check both); the benchmark passes ``da=None`` (ones), since
    values do not change the time.

    Args:
        weights: nn.RNN's flat weight list (with biases). x: (T, N, D) input.
        layer_outputs: each layer's (T·N, dirs·H) output h_t, from
            :func:`scratchrnn.core.functional.rnn_forward`.
        da: per layer and direction, (T·N, H) ∂L/∂a_t; None for ones.
    """

    def __init__(
        self,
        weights: Sequence[Tensor],
        x: Tensor,
        shape: Shape,
        layer_outputs: Sequence[Tensor],
        da: Sequence[Tensor] | None = None,
    ) -> None:
        T, N, H = shape.T, shape.N, shape.H
        dirs = 2 if shape.bidirectional else 1
        rows = T * N
        x_flat = x.reshape(rows, x.shape[-1])
        h0 = x.new_zeros(1, N, H)
        cells = walk([w.detach() for w in weights], shape)
        self.outs = [x.new_empty(rows, dirs * H) for _ in range(shape.layers)]
        self.dxs = [x.new_empty(rows, c.W_ih.shape[1]) for c in cells if c.direction == 0]
        self.cells = []
        for cell in cells:
            layer, d, cols, idx = cell.layer, cell.direction, cell.cols, cell.index
            h = layer_outputs[layer][:, cols].detach().reshape(T, N, H)
            # h_{t-1} of every step: h0, then the states shifted by one step (the other way in reverse)
            h_prev = torch.cat([h0, h[:-1]]) if d == 0 else torch.cat([h[1:], h0])  # (T, N, H)
            self.cells.append(
                BatchedCell(
                    layer=layer, first_back=cell.last_of_layer, W_ih=cell.W_ih,
                    W_hh_steps=cell.W_hh.expand(T, H, H), b=cell.b_ih + cell.b_hh,
                    layer_in=x_flat if layer == 0 else layer_outputs[layer - 1].detach(),
                    out=self.outs[layer][:, cols], h_prev=h_prev, h_prev_rows=h_prev.reshape(rows, H),
                    da=x.new_ones(rows, H) if da is None else da[idx].contiguous(),
                    dh_next=x.new_empty(T, N, H), dW_ih=torch.empty_like(cell.W_ih),
                    dW_hh=torch.empty_like(cell.W_hh),
                )
            )

    def forward(self) -> list[Tensor]:
        """Every layer's pre-activations a_t, (T·N, dirs·H), into preallocated buffers."""
        for c in self.cells:
            torch.addmm(c.b, c.layer_in, c.W_ih.t(), out=c.out)  # the input projection
            c.out.unflatten(0, c.h_prev.shape[:2]).baddbmm_(c.h_prev, c.W_hh_steps.transpose(1, 2))
        return self.outs

    def backward(self) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
        """dx (T·N, D) and, per layer and direction, (dW_ih, dW_hh, da_t W_hh of every step)."""
        for c in reversed(self.cells):
            torch.bmm(c.da.view_as(c.dh_next), c.W_hh_steps, out=c.dh_next)  # da_t W_hh, all t
            torch.mm(c.da.t(), c.h_prev_rows, out=c.dW_hh)  # dW_hh = Σ_t da_tᵀ h_{t-1}
            torch.mm(c.da.t(), c.layer_in, out=c.dW_ih)  # dW_ih = Σ_t da_tᵀ x_t
            dx = self.dxs[c.layer]
            if c.first_back:
                torch.mm(c.da, c.W_ih, out=dx)  # dx_t = da_t W_ih
            else:
                dx.addmm_(c.da, c.W_ih)
        return self.dxs[0], [(c.dW_ih, c.dW_hh, c.dh_next) for c in self.cells]


class Case:
    """One shape's variants, sharing one set of weights (nn.RNN's init) and one input."""

    def __init__(self, shape: Shape, dtype: torch.dtype = torch.float32, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.shape = shape
        kwargs = {"num_layers": shape.layers, "bidirectional": shape.bidirectional, "dtype": dtype}
        self.ours = RNN(shape.D, shape.H, **kwargs)
        self.theirs = nn.RNN(shape.D, shape.H, **kwargs)
        self.theirs.load_state_dict(self.ours.state_dict())
        self.ours_weights = [w for cell in self.ours.all_weights for w in cell]  # nn.RNN's flat order
        self.naive_weights = [w.detach().clone().requires_grad_() for w in self.ours_weights]
        dirs = 2 if shape.bidirectional else 1
        self.x = torch.randn(shape.T, shape.N, shape.D, dtype=dtype)
        self.x_grad = self.x.clone().requires_grad_()
        self.h0 = torch.zeros(shape.layers * dirs, shape.N, shape.H, dtype=dtype)
        self._floor: GemmFloor | None = None
        self._batched: BatchedGemms | None = None

    @property
    def floor(self) -> GemmFloor:
        if self._floor is None:  # built on first use: its buffers are large
            self._floor = GemmFloor(self.ours_weights, self.x, self.shape)
        return self._floor

    @property
    def batched(self) -> BatchedGemms:
        if self._batched is None:
            shape, dirs = self.shape, 2 if self.shape.bidirectional else 1
            with torch.no_grad():
                layer_outputs = rnn_forward(
                    self.x.reshape(-1, shape.D), self.h0, self.ours_weights, [shape.N] * shape.T,
                    num_layers=shape.layers, bidirectional=shape.bidirectional, bias=True,
                ).layer_outputs
            assert len(layer_outputs) == shape.layers and layer_outputs[0].shape[1] == dirs * shape.H
            self._batched = BatchedGemms(self.ours_weights, self.x, shape, layer_outputs)
        return self._batched

    def leaves(self, variant: str) -> list[Tensor]:
        """The tensors whose gradient a training step of ``variant`` computes."""
        params = {
            "scratchrnn": list(self.ours.parameters()),
            "nn.RNN": list(self.theirs.parameters()),
            "naive": self.naive_weights,
            "floor": [],
            "batched": [],
        }[variant]
        return [self.x_grad, *params]

    def zero_grad(self) -> None:
        """set_to_none on every leaf, as optimizer.zero_grad() does (untimed, before each call)."""
        for t in (self.x_grad, *self.ours.parameters(), *self.theirs.parameters(), *self.naive_weights):
            t.grad = None

    def forward(self, variant: str, x: Tensor) -> Tensor:
        """The output of ``variant`` for input x: (T, N, dirs * H)."""
        if variant == "scratchrnn":
            return self.ours(x)[0]
        if variant == "nn.RNN":
            return self.theirs(x)[0]
        if variant == "naive":
            return naive_forward(x, self.h0, self.naive_weights, self.shape)
        raise ValueError(f"unknown variant {variant!r}")

    def runner(self, variant: str, mode: str) -> Callable[[], object]:
        """The call that is timed for (variant, mode)."""
        if variant in ("floor", "batched"):
            floor = self.floor if variant == "floor" else self.batched
            if mode == "fwd":
                return floor.forward
            return lambda: (floor.forward(), floor.backward())
        if mode == "fwd":

            def fwd() -> Tensor:
                with torch.no_grad():
                    return self.forward(variant, self.x)

            return fwd

        def fwd_bwd() -> Tensor:
            output = self.forward(variant, self.x_grad)
            output.sum().backward()
            return output

        return fwd_bwd


# --------------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------------


def run_timings(
    shapes: Sequence[Shape],
    threads: Sequence[int],
    rounds: int,
    *,
    min_sample_s: float = 0.02,
    max_reps: int = 20,
    progress: Callable[[str], None] | None = None,
    cells: Sequence[str] = CELLS,
) -> dict[tuple[int, Shape, str, str], list[float]]:
    """Samples (seconds per call), one per round, for every (threads, shape, mode, variant): the
    RNN's :data:`VARIANTS` and, with "gru" in ``cells``, the GRUs of :mod:`bench.gru` (each GRU
    case checked against nn.GRU's output first)."""
    groups: list[tuple[object, Sequence[str]]] = []  # (case, its variants)
    if "rnn" in cells:
        groups += [(Case(shape), VARIANTS) for shape in shapes]
    if "gru" in cells:
        gru_variants = gru_bench.available_variants()
        for shape in shapes:
            case = GruCase(shape)
            case.check()
            groups.append((case, gru_variants))
    samples: dict[tuple[int, Shape, str, str], list[float]] = {}
    for n_threads in threads:
        with num_threads(n_threads):
            timed = [
                {(n_threads, case.shape, mode, v): case.runner(v, mode) for v in variants}
                for case, variants in groups for mode in MODES
            ]
            setup = {(n_threads, case.shape, mode, v): case.zero_grad
                     for case, variants in groups for mode in MODES for v in variants}
            samples |= interleaved_samples(
                timed, rounds, setup=setup, min_sample_s=min_sample_s, max_reps=max_reps,
                progress=progress and (lambda text, n=n_threads: progress(f"bench: threads={n} {text}")),
            )
    return samples


# --------------------------------------------------------------------------------------------
# Memory, each variant in its own process.
# --------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def _memory_child(variant: str, spec: str) -> dict[str, object]:
    """Runs in the subprocess: one training step's RSS high-water above the baseline, in bytes."""
    torch.set_num_threads(1)
    shape = Shape.parse(spec)
    case = GruCase(shape) if variant in gru_bench.VARIANTS else Case(shape)
    if variant == "floor":  # its buffers are its memory, so they are made inside the step

        def step() -> None:
            floor = GemmFloor(case.ours_weights, case.x, shape)
            floor.forward()
            floor.backward()

    else:
        fn = case.runner(variant, "fwd+bwd")

        def step() -> None:
            fn()

    step()  # warm-up: one-time allocations (thread pools, BLAS workspaces) are not the step's
    case.zero_grad()
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap pages back to the OS
    baseline = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM, the peak RSS, to the current RSS
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss (peak since process start)"
    step()
    if method.startswith("VmHWM"):
        peak = _status_kib("VmHWM")
    else:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"variant": variant, "bytes": (peak - baseline) * 1024, "method": method}


def measure_memory(shape: Shape, variants: Sequence[str] = MEMORY_VARIANTS) -> dict[str, dict[str, object]]:
    """Peak memory of one training step (forward, output.sum(), backward) per variant.

    Each variant runs in a fresh Python process (started together; memory does not depend on
    timing), with 1 thread. Inside, after the model and the input exist and one warm-up step has
    run, freed memory is returned to the OS (malloc_trim), the resident set size is read as the
    baseline, the kernel's peak-RSS counter is reset (writing 5 to /proc/self/clear_refs), one
    step runs, and the peak RSS (VmHWM) minus the baseline is the step's peak memory. glibc is told
    to serve every allocation of 64 KiB or more with its own mmap (MALLOC_MMAP_THRESHOLD_), so
    a freed tensor leaves the resident set at once and the RSS follows the live tensors.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    code = (
        "import json, sys; from scratchrnn.apps.bench.rnn import _memory_child; "
        "print(json.dumps(_memory_child(sys.argv[1], sys.argv[2])))"
    )
    procs = {
        v: subprocess.Popen(
            [sys.executable, "-c", code, v, shape.spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for v in variants
    }
    results = {}
    for v, proc in procs.items():
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory measurement of {v} failed:\n{err.strip()}")
        results[v] = json.loads(out.strip().splitlines()[-1])
    return results


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------


def _geomean(values: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


Samples = dict[tuple[int, Shape, str, str], list[float]]


def speed_table(samples: Samples, shapes: Sequence[Shape], threads: Sequence[int]) -> str:
    """Medians (ms per call) and ratios, one row per (threads, mode, shape)."""
    head = [
        "threads", "shape (T, N, D, H, L)", "mode", *(f"{v} ms" for v in VARIANTS),
        "nn.RNN / ours", "naive / ours", "ours / floor", "ours / batched", "spread",
    ]
    rows = []
    for n_threads in threads:
        for mode in MODES:
            for shape in shapes:
                m = {v: statistics.median(samples[n_threads, shape, mode, v]) for v in VARIANTS}
                noise = max(spread(samples[n_threads, shape, mode, v]) for v in VARIANTS)
                rows.append(
                    [str(n_threads), str(shape), mode, *(fmt_ms(m[v]) for v in VARIANTS),
                     f"{m['nn.RNN'] / m['scratchrnn']:.2f}×", f"{m['naive'] / m['scratchrnn']:.2f}×",
                     f"{m['scratchrnn'] / m['floor']:.2f}×", f"{m['scratchrnn'] / m['batched']:.2f}×",
                     f"{noise:.0%}"]
                )
    return md_table(head, rows)


def _ratios(samples: Samples, shapes: Sequence[Shape], n_threads: int, mode: str, num: str, den: str):
    med = {
        (shape, v): statistics.median(samples[n_threads, shape, mode, v])
        for shape in shapes
        for v in (num, den)
    }
    return {shape: med[shape, num] / med[shape, den] for shape in shapes}


def geomean_table(samples: Samples, shapes: Sequence[Shape], threads: Sequence[int]) -> str:
    head = ["threads", "mode", "nn.RNN / ours", "naive / ours", "ours / floor", "ours / batched"]
    rows = []
    for n_threads in threads:
        for mode in MODES:
            cols = [("nn.RNN", "scratchrnn"), ("naive", "scratchrnn"), ("scratchrnn", "floor"),
                    ("scratchrnn", "batched")]
            g = [_geomean(list(_ratios(samples, shapes, n_threads, mode, a, b).values())) for a, b in cols]
            rows.append([str(n_threads), mode, *(f"{x:.2f}×" for x in g)])
    return md_table(head, rows)


def target_checks(
    samples: Samples, shapes: Sequence[Shape], n_threads: int, memory: dict | None, t: Mapping[str, float]
) -> list[tuple[str, str, bool | None]]:
    """The RNN's targets, thresholds ``t`` from the targets file's [rnn] table: (target, what was
    measured, met?); None where not measured."""

    def worst(ratios: dict, fn=min) -> tuple[float, Shape]:
        shape = fn(ratios, key=ratios.get)
        return ratios[shape], shape

    fb = _ratios(samples, shapes, n_threads, "fwd+bwd", "nn.RNN", "scratchrnn")
    fw = _ratios(samples, shapes, n_threads, "fwd", "nn.RNN", "scratchrnn")
    g = _geomean(list(fb.values()))
    goal = t["fwd_bwd_geomean_speedup"]
    checks = [(f"fwd+bwd: geometric mean speed-up over nn.RNN ≥ {goal:g}×", f"{g:.2f}×", g >= goal)]
    r, s = worst(fb)
    goal = t["fwd_bwd_min_speedup"]
    checks.append((f"fwd+bwd: no shape slower than nn.RNN (min speed-up ≥ {goal:g}×)", f"{r:.2f}× at {s}",
                   r >= goal))
    r, s = worst(fw)
    goal = t["fwd_min_speedup"]
    checks.append((f"fwd: ≥ {goal:g}× faster than nn.RNN on every shape (min)", f"{r:.2f}× at {s}",
                   r >= goal))
    goal = t["memory_max_ratio"]
    target = f"peak memory of a training step ≤ {goal:g}× nn.RNN's"
    if memory is None:
        checks.append((target, "not measured", None))
    else:
        r = memory["scratchrnn"]["bytes"] / memory["nn.RNN"]["bytes"]
        checks.append((target, f"{r:.2f}×", r <= goal))
    floors = (
        ("floor", t["floor_max_ratio"], "every shape within {:g}× of the GEMM floor (max ours / floor)"),
        ("batched", t["batched_max_ratio"],
         "every shape within {:g}× of the batched GEMMs, a stricter floor (max ours / batched)"),
    )
    for floor, goal, text in floors:
        target = text.format(goal)
        ratios = {
            (shape, mode): ratio
            for mode in MODES
            for shape, ratio in _ratios(samples, shapes, n_threads, mode, "scratchrnn", floor).items()
        }
        (s, mode), r = max(ratios.items(), key=lambda kv: kv[1])
        checks.append((target, f"{r:.2f}× at {s} {mode}", r <= goal))
    return checks


def memory_table(memory: dict, variants: Sequence[str] = MEMORY_VARIANTS, base: str = "nn.RNN") -> str:
    """Each of ``variants``' peak memory and its ratio to ``base``'s."""
    head = ["variant", "peak above baseline (MiB)", f"/ {base}"]
    base_bytes = memory[base]["bytes"]
    rows = [
        [v, f"{memory[v]['bytes'] / 2**20:.1f}",
         f"{memory[v]['bytes'] / base_bytes:.2f}×" if base_bytes > 0 else "n/a"]
        for v in variants if v in memory
    ]
    return md_table(head, rows)


_METHOD = """\
- **Variants.** `scratchrnn`: `scratchrnn.RNN`. `nn.RNN`: `torch.nn.RNN` with the same state_dict.
  `naive`: the tutorial's time-major loop on autograd (`scratchrnn.core.reference.time_major_rnn`; for
  the bidirectional stack, one call per layer and direction). `floor`: the GEMM calls
  `scratchrnn.RNN` makes, and only those, into preallocated buffers, one Python call per step:
  it computes a linear RNN (no tanh) and its BPTT exactly, which needs no elementwise work
  (bias gradients, a reduction, are left out). `batched`: the same GEMMs again, with the T
  per-step GEMMs of each layer and direction done as one batched GEMM (`baddbmm`/`bmm`) on the
  hidden states and da_t of a real run: the arithmetic alone, with no call per step, which a
  loop issuing one GEMM per step (even in C) can approach but hardly beat. Same weights
  (nn.RNN's init), same input, float32; the tests check that every variant computes what it
  claims (scratchrnn and naive: nn.RNN's output and gradients; floor: a linear RNN's; batched:
  the real run's pre-activations and gradients).
- **Modes.** `fwd`: the forward under `torch.no_grad()`. `fwd+bwd`: forward, `output.sum()`,
  `backward()`, with the input requiring grad; gradients are set to None (untimed) before each call.
- **Timing.** Per thread count (`torch.set_num_threads`), every (shape, mode) a cell of the five
  variants, {rounds} rounds, samples of at least 20 ms (at most 20 calls); gradients set to None
  untimed before each call. `spread` is the largest among a row's variants.
- **Ratios.** `nn.RNN / ours` > 1 means scratchrnn is faster; `ours / floor` and `ours / batched`
  are how far it is from the time of its GEMMs alone (issued one per step from Python, or batched).
- **Memory.** One training step (`fwd+bwd` above) at {memory_shape}, each variant in a fresh
  subprocess with 1 thread. After building the model and the input and running one warm-up step,
  the process returns freed memory to the OS (`malloc_trim`), reads its resident set size as the
  baseline, resets the kernel's peak-RSS counter (writing `5` to `/proc/self/clear_refs`), runs the
  step and reports peak RSS (`VmHWM`) minus the baseline. glibc serves every allocation of 64 KiB or
  more with its own mmap (`MALLOC_MMAP_THRESHOLD_=65536`), so freed tensors leave the resident set
  at once. (tracemalloc cannot see torch's allocations; RSS can.) The floor allocates its buffers
  inside the step, so its figure is the size of those buffers."""


def _peer_shapes(shapes: Sequence[Shape]) -> list[tuple[int, int, int, int]]:
    if tuple(shapes) == SHAPES:
        return list(peer_bench.PEER_SHAPES)
    return [(s.T, s.N, s.D, s.H) for s in shapes if s.layers == 1 and not s.bidirectional]


@dataclasses.dataclass
class Measured:
    """What one benchmark run measured, before it is written up."""

    samples: Samples
    memory: dict | None  # by variant, the RNN's and the GRUs'
    peers: Sequence[str]
    peer_results: list
    started: datetime.datetime
    load_before: float
    load_after: float
    elapsed: float  # seconds
    cells: Sequence[str] = ("rnn",)
    gru_peers: Sequence[str] = ()
    gru_peer_results: list = dataclasses.field(default_factory=list)
    autocast: list = dataclasses.field(default_factory=list)  # autocast_bench rows


def run_benchmark(
    shapes: Sequence[Shape] = SHAPES,
    threads: Sequence[int] = (1, 2),
    rounds: int = 7,
    memory_shape: Shape | None = MEMORY_SHAPE,
    command: str = "scratchrnn bench",
    progress: Callable[[str], None] | None = None,
    peers: Sequence[str] | None = None,
    targets: Mapping | None = None,
    cells: Sequence[str] = CELLS,
    smoke: bool = False,
) -> str:
    """Times every variant, measures memory, times the peers, and returns the report as markdown.

    ``smoke`` (``--quick``): the report says only what ran (:func:`smoke_report`), since timings
    at toy shapes judge nothing.

    ``peers``: which of :data:`peers.PEERS` to time (None: all, but torch.compile only outside the
    quick smoke test, for its minutes of compiling); for the GRU the same, with nn.GRU for nn.RNN.
    Their shapes are issue 11's for the default grid, else the one-layer unidirectional ones among
    ``shapes``. ``targets``: the project's goals (:func:`load_targets`); None: the report checks
    none. ``cells``: "rnn" and/or "gru", the rows to run.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    if not threads or min(threads) < 1:
        raise ValueError(f"thread counts must be at least 1, got {list(threads)}")
    if not shapes:
        raise ValueError("no shapes to benchmark")
    if not cells or set(cells) - set(CELLS):
        raise ValueError(f"cells must be among {list(CELLS)}, got {list(cells)}")
    measured = measure_all(shapes, threads, rounds, memory_shape, progress, peers, cells)
    if smoke:
        return smoke_report(measured, shapes, threads, rounds, command)
    return report(measured, shapes, threads, rounds, memory_shape, command, targets)


def measure_all(shapes: Sequence[Shape], threads: Sequence[int], rounds: int, memory_shape: Shape | None,
                progress: Callable[[str], None] | None, peers: Sequence[str] | None,
                cells: Sequence[str] = ("rnn",)) -> Measured:
    """The timings, the memory subprocesses and the peers' processes, with the clock and the load."""
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    samples = run_timings(shapes, threads, rounds, progress=progress, cells=cells)
    memory = None
    if memory_shape is not None:
        if progress:
            progress(f"bench: peak memory at {memory_shape}, one subprocess per variant")
        variants = [*(MEMORY_VARIANTS if "rnn" in cells else ()),
                    *(gru_bench.available_variants() if "gru" in cells else ())]
        memory = measure_memory(memory_shape, variants)
    quick = tuple(shapes) == QUICK_SHAPES
    peer_shapes = _peer_shapes(shapes)

    def chosen(cell: str) -> list[str]:
        if cell not in cells:
            return []
        if peers is None:
            return [p for p in peer_bench.peers_of(cell) if not (quick and p == "torch.compile")]
        reference = {"nn.RNN": peer_bench.REFERENCE[cell], "nn.GRU": peer_bench.REFERENCE[cell]}
        return list(dict.fromkeys(reference.get(p, p) for p in peers))

    results = {}
    for cell in CELLS:
        names = chosen(cell)
        results[cell] = (peer_bench.measure(threads, peer_shapes, names, rounds, progress, cell)
                         if names and peer_shapes else [])
    autocast = autocast_bench.measure_autocast(shapes, threads, rounds, progress) if "rnn" in cells else []
    return Measured(samples, memory, chosen("rnn"), results["rnn"], started, load_before, os.getloadavg()[0],
                    time.perf_counter() - t0, cells, chosen("gru"), results["gru"], autocast)


def _targets_section(m: Measured, shapes: Sequence[Shape], threads: Sequence[int],
                     targets: Mapping | None) -> list[str]:
    if targets is None:
        return ["## Targets", "",
                f"None checked: this run read no targets file (the project's goals are in {TARGETS_FILE} "
                "of the repository; `scratchrnn bench` reads it from the repository root, or the file "
                "`--targets` names).", ""]
    goal_threads = targets["threads"]
    n_threads = goal_threads if goal_threads in threads else max(threads)
    checks = []
    if "rnn" in m.cells:
        checks += target_checks(m.samples, shapes, n_threads, m.memory, targets["rnn"])
        checks += peer_bench.peer_checks(m.peer_results, targets["rnn"]["peers_min_ratio"])
    if "gru" in m.cells:
        checks += gru_bench.target_checks(m.samples, shapes, threads, m.memory, targets["gru"])
    return [
        f"## Targets (RNN: threads = {n_threads})",
        "",
        f"The project's goals, from {TARGETS_FILE}.",
        "",
        md_table(["target", "measured", "met"],
                 [[t, v, {True: "yes", False: "**no**", None: "n/a"}[ok]] for t, v, ok in checks]),
        "",
    ]


def _peer_section(title: str, method: str, results: list, peers: Sequence[str], rounds: int) -> list[str]:
    return [
        title,
        "",
        method,
        "",
        peer_bench.limits_table(results),
        "",
        f"Median ms per call over {rounds} rounds:",
        "",
        peer_bench.peer_table(results, peers),
        "",
        peer_bench.compile_and_missing(results),
        "",
    ]


def report(m: Measured, shapes: Sequence[Shape], threads: Sequence[int], rounds: int,
           memory_shape: Shape | None, command: str, targets: Mapping | None = None) -> str:
    """The markdown report of a run: machine, method, targets, geometric means, speeds, peers,
    memory; then the GRU's speeds, peers and memory."""
    info = machine_info()
    info["torch threads used"] = ", ".join(map(str, threads))
    info["load average (1 min) before / after"] = f"{m.load_before:.2f} / {m.load_after:.2f}"
    info["date"] = m.started.strftime("%Y-%m-%d %H:%M UTC")
    info["wall time of the run"] = f"{m.elapsed:.0f} s"
    parts = [
        "# Benchmark results: scratchrnn.RNN vs torch.nn.RNN, the naive loop and the GEMM floor"
        + ("; scratchrnn.GRU vs torch.nn.GRU" if "gru" in m.cells else ""),
        "",
        f"Written by `{command}`. Every number below comes from that run; rerun the command to "
        "update them, never edit them by hand. The load average shows how busy the machine was: "
        "above 0 it was shared, and the `spread` column shows how much that moved the timings.",
        "",
        "## Machine",
        "",
        md_table(["", ""], [[k, v] for k, v in info.items()]),
        "",
        "## Method",
        "",
        _METHOD.format(rounds=rounds, memory_shape=memory_shape),
        "",
        *_targets_section(m, shapes, threads, targets),
    ]
    if "rnn" in m.cells:
        parts += [
            "## Geometric means over the shapes",
            "",
            geomean_table(m.samples, shapes, threads),
            "",
            f"## Speed: median ms per call over {rounds} rounds",
            "",
            speed_table(m.samples, shapes, threads),
            "",
        ]
        if m.peer_results:
            title = ("## Peers: scratchrnn against JAX, torch.compile, oneDNN's fused RNN and the "
                     "machine's limits")
            parts += _peer_section(title, peer_bench.PEER_METHOD, m.peer_results, m.peers, rounds)
        if m.autocast:
            parts += ["## Under autocast: scratchrnn against nn.RNN, with the error against float64", "",
                      autocast_bench.AUTOCAST_METHOD, "", autocast_bench.autocast_table(m.autocast), ""]
        if m.memory is not None:
            parts += [
                f"## Peak memory of one training step at {memory_shape}",
                "",
                memory_table(m.memory),
                "",
                f"Method: {m.memory['nn.RNN']['method']}.",
                "",
            ]
    if "gru" in m.cells:
        ours = any(k[3] == gru_bench.OURS for k in m.samples)
        parts += ["## GRU: scratchrnn.GRU vs torch.nn.GRU", "", gru_bench.METHOD, ""]
        if not ours:
            parts += [f"**{NO_GRU}**: the rows below time nn.GRU and the peers alone.", ""]
        else:
            parts += ["Geometric means and minimum over the shapes:", "",
                      gru_bench.geomean_table(m.samples, shapes, threads), ""]
        parts += [f"Median ms per call over {rounds} rounds:", "",
                  gru_bench.speed_table(m.samples, shapes, threads), ""]
        if m.gru_peer_results:
            title = "## GRU peers: scratchrnn.GRU against nn.GRU, JAX, torch.compile and oneDNN"
            parts += _peer_section(title, peer_bench.GRU_PEER_METHOD, m.gru_peer_results, m.gru_peers, rounds)
        if m.memory is not None and gru_bench.THEIRS in m.memory:
            parts += [
                f"## GRU: peak memory of one training step at {memory_shape}",
                "",
                memory_table(m.memory, gru_bench.VARIANTS, gru_bench.THEIRS),
                "",
                f"Method: as for the RNN ({m.memory[gru_bench.THEIRS]['method']}).",
                "",
            ]
    return "\n".join(parts)


def smoke_report(m: Measured, shapes: Sequence[Shape], threads: Sequence[int], rounds: int,
                 command: str) -> str:
    """The report of a smoke test (``--quick``): what ran, with its medians; no targets, ratios,
    rates or verdicts, which toy shapes cannot support."""
    variants = list(dict.fromkeys(k[3] for k in m.samples))  # the RNN's, then the GRU's, as timed
    rows = [[str(n), str(shape), mode, *(fmt_ms(statistics.median(m.samples[n, shape, mode, v]))
                                         if (n, shape, mode, v) in m.samples else "-" for v in variants)]
            for n in threads for mode in MODES for shape in shapes]
    results = (*m.peer_results, *m.gru_peer_results)
    timed = sorted({p for r in results for c in r["cells"] for p in _peer_names(c)})
    ran = [f"peers timed: {', '.join(timed)}" if timed else "peers: none (missing, or no 1-layer shape)"]
    ran += [f"peak-memory subprocesses: {', '.join(m.memory)}" if m.memory else "peak memory: not measured"]
    return "\n".join([
        "# scratchrnn bench --quick: a smoke test",
        "",
        f"`{command}`: a smoke test, not a benchmark: toy shapes and {rounds} rounds check that every "
        "variant runs; no targets, ratios or verdicts (run `scratchrnn bench` for those).",
        "",
        md_table(["threads", "shape (T, N, D, H, L)", "mode", *(f"{v} ms" for v in variants)], rows),
        "",
        *(f"- {line}" for line in ran),
        f"- {m.elapsed:.0f} s, torch {torch.__version__}",
        "",
    ])


def _peer_names(cell: dict) -> set[str]:
    return {key.split("|")[0] for key in cell["samples"]}
