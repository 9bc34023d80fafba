r"""The stack over any cell: layers × directions × packing, forward, BPTT and forward mode, knowing
no equation (each cell's equations are in its own file under :mod:`scratchrnn.core.cells`).

Shapes use one set of letters everywhere: T time steps, N batch, D input features, H hidden units.

Layout and order. A layer runs over all T steps before the next layer starts ("layer-major").
That lets the input projection xp = x W_ihᵀ (+ b_ih) of all steps be a single GEMM, leaving only
the h_{t-1} W_hhᵀ product inside the sequential loop. A stacked RNN computes the same numbers in
either order (see ``scratchrnn.core.reference`` for the time-major loop and the test proving it).
Every sequence is held time-major and flattened, (rows, features), ``batch_sizes[t]`` rows at step
t; the :class:`~scratchrnn.core.stack.Plan` of a call says, for each step a direction runs, which
rows carry on, which start from h0 and which end (their state is h_n), once for all layers.

For one layer and one direction, with the cell's step, step backward and residuals:

    forward     xp = x W_ihᵀ + b_ih (one GEMM);   for t in order:  h_t = step(xp_t, h_{t−1})
    backward    for t in reverse order:   dh_t = ∂L/∂h_t (from the output) + dh_next
                    dxp_t, dhp_t, dh_direct = step_backward(dh_t, residuals_t, h_{t−1})
                    dh_next = dhp_t W_hh (+ dh_direct)        flows to step t − 1, or to ∂L/∂h_0
    then, every weight gradient is one GEMM or reduction over all steps:
        dW_ih = Σ_t dxp_tᵀ x_t   db_ih = Σ dxp_t   dW_hh = Σ_t dhp_tᵀ h_{t−1}   db_hh = Σ dhp_t
        dx_t = dxp_t W_ih

A sequence that ends at step t gets ∂L/∂h_n there in place of dh_next.

Dropout between layers (training only): layer l > 0 reads x̃ = h ⊙ m, m = 0 or 1 / (1 − p), the
masks drawn by :func:`dropout_masks` before the forward and passed in, so that the forward is a
deterministic function of its inputs (what an operator must be); the backward multiplies by m.

What is saved for backward: the input, hx, the weights, the masks and every layer's output (the
hidden states), nothing per step; a dropped-out layer input x̃ is recomputed from its mask, and
what a cell's step backward reads (f'(a_t) for the Elman cell, the gates for the GRU) is
recomputed from the layer's input and outputs by :meth:`~scratchrnn.core.cells.Cell.residuals`.

Second derivatives. The PyTorch loop of the backward is written out of place in differentiable
torch operations (and so is every cell's step backward), so with ``differentiable=True`` (no C
loop, no oneDNN) autograd can differentiate our hand-written BPTT: that is how double backward
(``create_graph=True``), ``torch.func.hessian`` and the like are computed. The first-order
backward itself never uses autograd.

Forward mode (:func:`rnn_jvp`), one sequential loop like the forward: ẋp = ẋ W_ihᵀ + x Ẇ_ihᵀ +
ḃ_ih and the known part of ḣp, h_{t−1} Ẇ_hhᵀ + ḃ_hh, are one GEMM each over all steps; only
ḣ_{t−1} W_hhᵀ stays inside the loop, and the cell's step tangent gives ḣ_t (from the tangents of
the cell's extra parameters too). A cell's recurrent mask m multiplies h_{t−1} and ḣ_{t−1} there.

The per-step loops exist twice for the built-in cells: in PyTorch here (the reference, and the path
on GPUs and for other dtypes) and in C (``_steps.c``, loaded by ``accel``), used on the CPU for
float32 and float64 when a C compiler is present; both pass the same tests. ``SCRATCHRNN_ACCEL=0``
turns the C loops off.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import NamedTuple

import torch
from torch import Tensor

from scratchrnn.core import accel, cells
from scratchrnn.core.cells import Cell
from scratchrnn.core.stack import Layout, Plan

__all__ = [
    "RNNForward", "dropout_masks", "layer_backward", "layer_forward", "layer_inputs", "layer_jvp",
    "rnn_backward", "rnn_forward", "rnn_jvp",
]


def layer_forward(
    cell: Cell,
    x: Tensor,
    h0: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    plan: Plan,
    out: Tensor,
    h_n: Tensor,
    reverse: bool = False,
    aux: Sequence[Tensor] = (),
) -> None:
    """One layer, one direction, all steps: fills ``out`` with every h_t and ``h_n`` with the last.

    Args:
        cell: the cell.
        x: (rows, D) time-major flattened input, ``plan.sizes[t]`` rows at step t.
        h0: (N, H) initial state. W_ih: (G·H, D). W_hh: (G·H, H). b_ih, b_hh: (G·H,) or None.
        plan: the steps of this call.
        out: (rows, H) buffer to fill with h_t (may be a column slice of a wider buffer).
        h_n: (N, H) buffer to fill with each sequence's last state.
        reverse: run from the last step to the first (the backward direction of a bidirectional
            RNN); each sequence then starts from h0 at its own last step.
        aux: the cell's extra parameters and masks (rows, ·) of this layer and direction.
    """
    xp = cell.project(x, W_ih, b_ih, out, *aux)  # (rows, G·H): the input projection of all steps at once
    if cell.accel_ready(out, h0, W_hh, *aux):
        cell.forward_accel(xp, h0.contiguous(), W_hh, b_ih, b_hh, plan.sizes, out, h_n, reverse, *aux)
        return
    constants = cell.step_constants(W_hh, b_ih, b_hh, *aux)
    xp_steps, out_steps = plan.split(xp), plan.split(out)
    h_prev = h0
    for step in plan.steps(reverse):
        t, b, c = step.t, step.size, step.carried
        if c:  # rows carried on from the step before
            cell.step(xp_steps[t][:c], h_prev[:c], constants, out_steps[t][:c])
        if c < b:  # rows starting here, from h0
            cell.step(xp_steps[t][c:], h0[c:b], constants, out_steps[t][c:])
        h_prev = out_steps[t]
        if step.kept < b:  # rows whose sequence ends here
            h_n[step.kept : b] = h_prev[step.kept :]


def layer_backward(
    cell: Cell,
    dout: Tensor,
    dh_n: Tensor,
    x: Tensor,
    h0: Tensor,
    out: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    plan: Plan,
    reverse: bool = False,
    need_dx: bool = True,
    differentiable: bool = False,
    aux: Sequence[Tensor] = (),
) -> tuple[Tensor | None, Tensor, list[Tensor]]:
    """BPTT through one layer and direction; the inverse of :func:`layer_forward`.

    Args:
        dout: (rows, H) ∂L/∂h_t from the layer's output. dh_n: (N, H) ∂L/∂h_n.
        cell, x, h0, out, W_ih, W_hh, b_ih, b_hh, plan, reverse: as in the forward.
        need_dx: compute dx (skipped for a first layer whose input needs no gradient).
        differentiable: use only differentiable torch operations (the PyTorch loop, torch.mm), so
            that autograd can differentiate this backward (double backward).

    Returns:
        dx (rows, D) or None, dh0 (N, H), and [dW_ih, dW_hh(, db_ih, db_hh)] followed by the
        gradients of the cell's extra parameters.
    """
    matmul = torch.mm if differentiable else accel.matmul
    h_prev = cache(lambda: plan.h_prev(out, h0, reverse))  # (rows, H): h_{t−1} of every row
    mask, dextra = None, None  # the cell's mask on h_{t−1} into W_hh; its extra parameters' rows
    if not differentiable and cell.accel_ready(dout, out, W_hh, *aux):
        # The loop in C, over a buffer holding ∂L/∂h_t; ∂L/∂h_n joins the rows at the step where
        # each sequence ends (the last step processed).
        dh = dout.clone(memory_format=torch.contiguous_format)  # (rows, H)
        plan.add_final_(dh, dh_n, reverse)
        dh0 = torch.empty_like(h0, memory_format=torch.contiguous_format)
        dxp, dhp, *extra = cell.backward_accel(dh, x, h0.contiguous(), h_prev, out, W_ih, W_hh, b_ih,
                                               b_hh, plan.sizes, dh0, reverse, *aux)
        dextra = extra[0] if extra else None  # the extra parameters' gradient rows, as below
    else:
        dxp, dhp, dh0, mask, dextra = _bptt_steps(cell, dout, dh_n, x, h0, out, W_ih, W_hh, b_ih,
                                                  b_hh, plan, reverse, h_prev, aux)

    # After the loop, each weight gradient is one GEMM (or reduction) over all steps at once.
    if mask is not None:
        dW_hh = cell.recurrent_weight_grad(dhp, h_prev() * mask, matmul)  # Σ_t dhp_tᵀ (h_{t-1} ⊙ m)
    elif plan.padded:  # h_{t-1} is out shifted by one step: a view, no copy
        rows_h0, rows_carried, rows_prev = plan.shifted(reverse)
        dW_hh = cell.recurrent_weight_grad(dhp[rows_carried], out[rows_prev], matmul) \
            + cell.recurrent_weight_grad(dhp[rows_h0], h0)  # Σ_t dhp_tᵀ h_{t-1}
    else:
        dW_hh = cell.recurrent_weight_grad(dhp, h_prev(), matmul)  # Σ_t dhp_tᵀ h_{t-1}
    dW_ih = matmul(dxp.t(), x)  # dW_ih = Σ_t dxp_tᵀ x_t    (G·H, D)
    dweights = [dW_ih, dW_hh]
    if b_ih is not None:
        db_ih = dxp.sum(0)  # db_ih = Σ_t Σ_n dxp_t         (G·H,)
        dweights += [db_ih, db_ih.clone() if dhp is dxp else dhp.sum(0)]  # db_hh = Σ_t Σ_n dhp_t
    if dextra is not None:  # the extra parameters' gradients, each a sum over rows
        shapes = cell.extra_parameter_shapes(h0.shape[1]).values()
        columns = dextra.split([torch.Size(shape).numel() for shape in shapes], 1)
        dweights += [c.sum(0).view(shape) for c, shape in zip(columns, shapes, strict=True)]  # no aliases
    dx = matmul(dxp, W_ih) if need_dx else None  # dx_t = dxp_t W_ih   (rows, D)
    return dx, dh0, dweights


def _bptt_steps(
    cell: Cell,
    dout: Tensor,
    dh_n: Tensor,
    x: Tensor,
    h0: Tensor,
    out: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    plan: Plan,
    reverse: bool,
    h_prev,
    aux: Sequence[Tensor] = (),
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """The BPTT loop in PyTorch, out of place (so autograd can differentiate it): dxp, dhp, dh0,
    the cell's recurrent mask (rows, H) or None, and its extra parameters' gradient rows or None.

    ``dh_next`` for step t holds, for each of its rows, dhp W_hh (+ dh_direct) from the step
    processed after t if the row carried on there, else the row's ∂L/∂h_n (its sequence ended at t).
    """
    residuals = cell.residuals(x, h_prev, out, W_ih, W_hh, b_ih, b_hh, *aux)
    residual_steps = plan.split(residuals)
    mask = cell.recurrent_mask(residuals)  # (rows, H) or None
    mask_steps = plan.split(mask) if mask is not None else None
    dh_steps, out_steps = plan.split(dout), plan.split(out)
    steps = plan.steps(reverse)
    dextra_steps: list[Tensor] = []
    dxp_steps: list[Tensor] = [dout] * len(steps)
    dhp_steps: list[Tensor] = [dout] * len(steps)
    dh0_pieces: list[tuple[int, Tensor]] = []
    carried = None  # dh_{t−1} for the rows of step t that carried on into the step after
    for k in range(len(steps) - 1, -1, -1):  # BPTT: the steps in the reverse of the forward's order
        t, b, c = steps[k].t, steps[k].size, steps[k].carried
        if carried is None:  # the last step processed: every row's sequence ends here
            dh_next = dh_n[:b]
        elif carried.shape[0] < b:  # forward direction, packed: rows m..b end at step t
            dh_next = torch.cat([carried, dh_n[carried.shape[0] : b]])
        else:
            dh_next = carried
        dxp_t, dhp_t, dh_direct, *dextra_t = cell.step_backward(
            dh_steps[t] + dh_next, residual_steps[t], plan.h_prev_at(out_steps, h0, reverse, k),
        )
        dxp_steps[t], dhp_steps[t] = dxp_t, dhp_t
        dextra_steps += dextra_t
        carried = cell.recurrent_backward(dhp_t[:c], W_hh) if c else None  # dh_next = dhp_t W_hh
        if carried is not None and mask_steps is not None:
            carried = carried * mask_steps[t][:c]  # (… ⊙ m): h_{t-1} entered W_hh masked
        if carried is not None and dh_direct is not None:
            carried = carried + dh_direct[:c]
        if c < b:  # rows that began at step t from h0: their dh_next is ∂L/∂h_0
            dh0_piece = cell.recurrent_backward(dhp_t[c:], W_hh)
            if mask_steps is not None:
                dh0_piece = dh0_piece * mask_steps[t][c:]
            dh0_pieces.append((c, dh0_piece if dh_direct is None else dh0_piece + dh_direct[c:]))
    dh0 = torch.cat([piece for _, piece in sorted(dh0_pieces, key=lambda p: p[0])]) if dh0_pieces \
        else torch.zeros_like(h0)
    dxp = torch.cat(dxp_steps)
    same = all(p is q for p, q in zip(dxp_steps, dhp_steps, strict=True))
    dextra = torch.cat(dextra_steps) if dextra_steps else None  # any row order: it is summed
    return dxp, dxp if same else torch.cat(dhp_steps), dh0, mask, dextra


def dropout_masks(like: Tensor, width: int, num_layers: int, p: float) -> list[Tensor]:
    """Inverted-dropout masks for the inputs of layers 1 … L − 1: 0 with probability p, else
    1 / (1 − p); shaped like ``like``'s leading dimensions × ``width``. None drawn when p = 0."""
    if p == 0:
        return []
    shape = (*like.shape[:-1], width)
    if p >= 1:
        return [like.new_zeros(shape) for _ in range(num_layers - 1)]
    return [like.new_empty(shape).bernoulli_(1 - p).div_(1 - p) for _ in range(num_layers - 1)]


def _split_options(cell: Cell, layout: Layout, plan: Plan, weights: Sequence[Tensor],
                   masks: Sequence[Tensor]) -> tuple[list, list, list[list[Tensor]]]:
    """(nn's weights, the dropout masks between layers, each layer and direction's aux).

    ``weights`` holds nn's weights, then the cell's extra parameters (per layer and direction, in
    the walk's order); ``masks`` the dropout masks, then the cell's masks (per layer and direction,
    one of each kind of ``cell.noise``). A "sequence" mask (N, H) is repeated for every step's rows.
    """
    count = layout.num_layers * layout.dirs
    num_nn = count * layout.per
    extras, kinds = weights[num_nn:], len(cell.noise)
    num_dropout = len(masks) - count * kinds
    cell_masks, e = masks[num_dropout:], len(extras) // count
    aux = []
    for _, _, idx in layout.walk():
        rows = [m[: plan.N].repeat(len(plan.sizes), 1) if kind == "sequence" and plan.padded
                else torch.cat([m[:b] for b in plan.sizes]) if kind == "sequence" else m
                for m, kind in zip(cell_masks[idx * kinds : (idx + 1) * kinds], cell.noise, strict=True)]
        aux.append([*extras[idx * e : (idx + 1) * e], *rows])
    return list(weights[:num_nn]), list(masks[:num_dropout]), aux


class RNNForward(NamedTuple):
    """What :func:`rnn_forward` returns: the outputs, and what the backward needs besides them."""

    output: Tensor  # (rows, dirs * H): the last layer's h_t, [forward | reverse]
    h_n: Tensor  # (num_layers * dirs, N, H)
    inner: Tensor  # (num_layers − 1, rows, dirs * H): the outputs of every layer but the last

    @property
    def layer_outputs(self) -> list[Tensor]:
        """Every layer's output (rows, dirs * H), the last one being ``output``."""
        return [*self.inner.unbind(0), self.output]


def layer_inputs(x: Tensor, layer_outputs: Sequence[Tensor], masks: Sequence[Tensor]) -> list[Tensor]:
    """What each layer read: x for the first, the layer below's output (⊙ its dropout mask) after."""
    below = layer_outputs[:-1]
    return [x, *(h * m for h, m in zip(below, masks, strict=True))] if masks else [x, *below]


def rnn_forward(
    x: Tensor,
    hx: Tensor,
    weights: Sequence[Tensor],
    batch_sizes: Sequence[int],
    masks: Sequence[Tensor] = (),
    *,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    cell: str = "rnn_tanh",
) -> RNNForward:
    """The stacked (and optionally bidirectional) RNN of a registered cell, layer by layer.

    Args:
        x: (rows, D) time-major flattened input (see the module docstring).
        hx: (num_layers * dirs, N, H) initial states.
        weights: per layer and direction, in torch.nn's order: W_ih, W_hh[, b_ih, b_hh].
        batch_sizes: rows per step.
        masks: dropout masks (rows, dirs * H) for the inputs of layers 1 … L − 1, or none
            (no dropout); see :func:`dropout_masks`.
        cell: the name of a registered cell (:mod:`scratchrnn.core.cells`).

    Returns:
        :class:`RNNForward`: output (rows, dirs * H), h_n (num_layers * dirs, N, H) and the inner
        layers' outputs (before dropout), which the backward needs.
    """
    step_cell, layout, plan = cells.get(cell), Layout(num_layers, bidirectional, bias), Plan(batch_sizes)
    weights, masks, aux = _split_options(step_cell, layout, plan, weights, masks)
    dirs, H = layout.dirs, hx.shape[-1]
    h_n = hx.new_empty(hx.shape)  # contiguous whatever the layout of hx
    # Each layer's output, [forward | reverse]: the inner layers' in one tensor, the last apart.
    inner = x.new_empty(num_layers - 1, x.shape[0], dirs * H)  # (L − 1, rows, dirs * H)
    output = x.new_empty(x.shape[0], dirs * H)  # (rows, dirs * H)
    layer_in = x
    for layer, d, idx in layout.walk():
        if d == 0 and layer > 0:
            layer_in = inner[layer - 1] if not masks else inner[layer - 1] * masks[layer - 1]
        out = inner[layer] if layer < num_layers - 1 else output
        layer_forward(step_cell, layer_in, hx[idx], *layout.weights(weights, idx), plan,
                      out[:, d * H : (d + 1) * H], h_n[idx], reverse=d == 1, aux=aux[idx])
    return RNNForward(output, h_n, inner)


def rnn_backward(
    doutput: Tensor,
    dh_n: Tensor,
    x: Tensor,
    hx: Tensor,
    weights: Sequence[Tensor],
    batch_sizes: Sequence[int],
    layer_outputs: Sequence[Tensor],
    masks: Sequence[Tensor] = (),
    dlayer_outputs: Sequence[Tensor | None] = (),
    *,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    cell: str = "rnn_tanh",
    need_dx: bool = True,
    differentiable: bool = False,
) -> tuple[Tensor | None, Tensor, list[Tensor]]:
    """BPTT through the whole stack, last layer first; the inverse of :func:`rnn_forward`.

    Takes the forward's inputs and its ``layer_outputs``; ``dlayer_outputs`` are gradients
    reaching the inner layers' outputs directly (besides through the layers above), one per
    layer but the last, or none. Returns dx (None unless ``need_dx``), dhx
    (num_layers * dirs, N, H), and one gradient per weight, in the order of ``weights``.
    ``differentiable``: see :func:`layer_backward`.
    """
    step_cell, layout, plan = cells.get(cell), Layout(num_layers, bidirectional, bias), Plan(batch_sizes)
    weights, masks, aux = _split_options(step_cell, layout, plan, weights, masks)
    H = hx.shape[-1]
    inputs = layer_inputs(x, layer_outputs, masks)
    dh0s: list[Tensor] = [hx] * (num_layers * layout.dirs)
    dweights: list[list[Tensor]] = [[] for _ in dh0s]
    dout, dx = doutput, None
    for layer, d, idx in layout.walk(reverse_layers=True):
        if d == 0:
            if layer < num_layers - 1:
                dout = dx * masks[layer] if masks else dx  # through the dropout before the layer above
                if dlayer_outputs and dlayer_outputs[layer] is not None:
                    dout = dout + dlayer_outputs[layer]
            dx = None
        cols = slice(d * H, (d + 1) * H)
        dx_d, dh0s[idx], dweights[idx] = layer_backward(
            step_cell, dout[:, cols], dh_n[idx], inputs[layer], hx[idx], layer_outputs[layer][:, cols],
            *layout.weights(weights, idx), plan, reverse=d == 1, need_dx=need_dx or layer > 0,
            differentiable=differentiable, aux=aux[idx],
        )
        if dx_d is not None:
            dx = dx_d if dx is None else dx + dx_d  # both directions read the same input
    per = layout.per  # nn's weights first, then the cell's extra parameters: the order of weights
    return dx, torch.stack(dh0s), [*(dw for d in dweights for dw in d[:per]),
                                   *(dw for d in dweights for dw in d[per:])]


def layer_jvp(
    cell: Cell,
    x: Tensor,
    h0: Tensor,
    out: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    plan: Plan,
    x_dot: Tensor | None,
    h0_dot: Tensor | None,
    weights_dot: Sequence[Tensor | None],
    reverse: bool = False,
    aux: Sequence[Tensor] = (),
    aux_dot: Sequence[Tensor | None] = (),
) -> tuple[Tensor, Tensor]:
    """Forward mode through one layer and direction: the tangents ḣ_t of ``out`` and ḣ_n.

    Args:
        cell, x, h0, W_ih, W_hh, b_ih, b_hh, plan, reverse, aux: as in :func:`layer_forward`
            (``out`` is its result, the h_t).
        x_dot (rows, D), h0_dot (N, H), weights_dot (Ẇ_ih, Ẇ_hh, ḃ_ih, ḃ_hh): the tangents of the
            inputs, None where zero.
        aux_dot: the tangents of the cell's extra parameters (the first of ``aux``; layer norm's
            γ̇, β̇), None where zero, handed to every step's tangent; the masks are constants.
            A cell's recurrent mask m (:meth:`~scratchrnn.core.cells.Cell.recurrent_mask`) enters
            ḣp_t as it entered hp_t: (h_{t−1} ⊙ m) Ẇ_hhᵀ + (ḣ_{t−1} ⊙ m) W_hhᵀ.

    Returns:
        out_dot (rows, H), the ḣ_t; h_n_dot (N, H), the tangent of each sequence's last state.
    """
    W_ih_dot, W_hh_dot, b_ih_dot, b_hh_dot = weights_dot
    N, H = h0.shape
    rows, GH = out.shape[0], W_ih.shape[0]
    # Every term of ẋp_t and ḣp_t but ḣ_{t-1} W_hhᵀ, for all steps at once.
    xp_dot = out.new_zeros(rows, GH)  # (rows, G·H)
    if x_dot is not None:
        xp_dot = xp_dot + x_dot @ W_ih.t()  # ẋ_t W_ihᵀ
    if W_ih_dot is not None:
        xp_dot = xp_dot + x @ W_ih_dot.t()  # x_t Ẇ_ihᵀ
    if b_ih_dot is not None:
        xp_dot = xp_dot + b_ih_dot  # ḃ_ih
    h_prev = cache(lambda: plan.h_prev(out, h0, reverse))
    residuals = cell.residuals(x, h_prev, out, W_ih, W_hh, b_ih, b_hh, *aux)
    mask = cell.recurrent_mask(residuals)  # (rows, H) or None: m on h_{t-1} where it enters W_hh
    hp_dot = out.new_zeros(rows, GH)  # (rows, G·H)
    if W_hh_dot is not None:
        h_in = h_prev() if mask is None else h_prev() * mask  # h_{t-1} (⊙ m)
        hp_dot = hp_dot + cell.recurrent(h_in, W_hh_dot)  # (h_{t-1} ⊙ m) Ẇ_hhᵀ
    if b_hh_dot is not None:
        hp_dot = hp_dot + b_hh_dot  # ḃ_hh
    residual_steps = plan.split(residuals)
    mask_steps = plan.split(mask) if mask is not None else None
    xp_dot_steps, hp_dot_steps, out_steps = plan.split(xp_dot), plan.split(hp_dot), plan.split(out)
    h0_dot = h0_dot if h0_dot is not None else h0.new_zeros(N, H)
    steps = plan.steps(reverse)
    h_dot_steps: list[Tensor] = [out] * len(steps)
    h_n_dot_pieces: list[tuple[int, Tensor]] = []
    h_dot_prev = h0_dot
    for k, step in enumerate(steps):
        t, b, c = step.t, step.size, step.carried
        h_dot_prev = h_dot_prev[:c] if c == b else h0_dot[:b] if c == 0 else \
            torch.cat([h_dot_prev[:c], h0_dot[c:b]])
        h_dot_in = h_dot_prev if mask_steps is None else h_dot_prev * mask_steps[t]  # ḣ_{t-1} (⊙ m)
        hp_dot_t = hp_dot_steps[t] + cell.recurrent(h_dot_in, W_hh)  # ḣp_t = … + (ḣ_{t-1} ⊙ m) W_hhᵀ
        h_dot_prev = h_dot_steps[t] = cell.step_tangent(
            xp_dot_steps[t], hp_dot_t, h_dot_prev, residual_steps[t],
            plan.h_prev_at(out_steps, h0, reverse, k), *aux_dot,
        )
        if step.kept < b:
            h_n_dot_pieces.append((step.kept, h_dot_prev[step.kept :]))
    h_n_dot = torch.cat([piece for _, piece in sorted(h_n_dot_pieces, key=lambda p: p[0])])
    return torch.cat(h_dot_steps), h_n_dot


def rnn_jvp(
    x: Tensor,
    hx: Tensor,
    weights: Sequence[Tensor],
    batch_sizes: Sequence[int],
    layer_outputs: Sequence[Tensor],
    masks: Sequence[Tensor],
    x_dot: Tensor | None,
    hx_dot: Tensor | None,
    weights_dot: Sequence[Tensor | None],
    *,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    cell: str = "rnn_tanh",
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Forward mode through the whole stack, first layer first: the jvp of :func:`rnn_forward`.

    Takes the forward's inputs and ``layer_outputs``, and the inputs' tangents (None where zero;
    the masks are constants; ``weights_dot`` like ``weights``: nn's, then the cell's extra
    parameters'). Returns the tangents of output, h_n and every layer's output.
    """
    step_cell, layout, plan = cells.get(cell), Layout(num_layers, bidirectional, bias), Plan(batch_sizes)
    weights, masks, aux = _split_options(step_cell, layout, plan, weights, masks)
    extras_dot = weights_dot[len(weights) :]  # the cell's extra parameters' tangents, as in weights
    e = len(extras_dot) // (num_layers * layout.dirs)
    H = hx.shape[-1]
    inputs = layer_inputs(x, layer_outputs, masks)
    h_n_dots: list[Tensor] = [hx] * (num_layers * layout.dirs)
    out_dots: list[Tensor] = []
    in_dot, directions = x_dot, []
    for layer, d, idx in layout.walk():
        if d == 0 and layer > 0:
            in_dot = out_dots[-1] * masks[layer - 1] if masks else out_dots[-1]  # x̃̇ = ḣ ⊙ m
        out_dot, h_n_dots[idx] = layer_jvp(
            step_cell, inputs[layer], hx[idx], layer_outputs[layer][:, d * H : (d + 1) * H],
            *layout.weights(weights, idx), plan, in_dot, None if hx_dot is None else hx_dot[idx],
            layout.weights(weights_dot, idx), reverse=d == 1, aux=aux[idx],
            aux_dot=extras_dot[idx * e : (idx + 1) * e],
        )
        directions.append(out_dot)
        if d == layout.dirs - 1:
            out_dots.append(torch.cat(directions, 1) if len(directions) == 2 else directions[0])
            directions = []
    return out_dots[-1], torch.stack(h_n_dots), out_dots
