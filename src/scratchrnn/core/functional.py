r"""The Elman RNN, forward and backpropagation through time (BPTT), written out by hand.

Shapes use one set of letters everywhere: T time steps, N batch, D input features,
H hidden units (V, the vocabulary, appears in the language model).

Forward, for one layer and one direction (rows are batch elements, so weights act from the right):

    a_t = x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh        pre-activation      (N, H)
    h_t = tanh(a_t)            (or relu(a_t))             hidden state        (N, H)

Backward, given dh_t = ∂L/∂h_t from the layer's output (and dh_T from h_n), for t = T … 1:

    da_t    = (dh_t + dh_next) ⊙ (1 − h_t²)       (relu: ⊙ [h_t > 0])
    dh_next = da_t W_hh                             flows to step t − 1; at t = 1 it is ∂L/∂h_0

and, once the loop is done, every weight gradient is one GEMM or reduction over all steps:

    dW_hh = Σ_t da_tᵀ h_{t-1}      dW_ih = Σ_t da_tᵀ x_t      db = Σ_t Σ_n da_t      dx_t = da_t W_ih

(db is the gradient of both b_ih and b_hh: the two biases always appear as a sum. PyTorch keeps two
so that its weights match cuDNN's layout; we keep both so state_dicts load both ways.)

Layout and order. A layer runs over all T steps before the next layer starts ("layer-major").
That lets the input projection x_t W_ihᵀ + b of all steps be a single GEMM, leaving only the
h_{t-1} W_hhᵀ product inside the sequential loop. A stacked RNN computes the same numbers in
either order (see ``scratchrnn.core.reference`` for the time-major loop and the test proving it).

Every sequence is held time-major and flattened: a tensor of shape (rows, features) whose rows are
step 0's batch, then step 1's batch, and so on, with ``batch_sizes[t]`` rows at step t. Padded input
has batch_sizes = [N] * T; a PackedSequence already has this layout (its sequences sorted by length,
so batch_sizes never increases). Outputs are filled in place into one preallocated buffer: the
projection is written there, each step adds h_{t-1} W_hhᵀ and applies tanh in place.

What is saved for backward: the layer inputs and the layer outputs (the hidden states), nothing
per step. f'(a_t) is recomputed from h_t (1 − h_t² for tanh): in the PyTorch loop by one vectorised
operation before the BPTT loop, into the buffer that then holds da; in the C loop step by step.
The backward is not itself differentiable (no double backward).

The per-step loops exist twice: in PyTorch here (the reference, and the path on GPUs and for other
dtypes) and in C (``_steps.c``, loaded by ``accel``), used on the CPU for float32 and float64 when
a C compiler is present; both pass the same tests. ``SCRATCHRNN_ACCEL=0`` turns the C loops off.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from scratchrnn.core import accel

__all__ = ["layer_backward", "layer_forward", "rnn_backward", "rnn_forward"]

# --------------------------------------------------------------------------------------------
# The math: pure functions on tensors.
# --------------------------------------------------------------------------------------------


def _activate_(a: Tensor, nonlinearity: str) -> Tensor:
    """h = tanh(a) or relu(a), computed in place over a."""
    return a.tanh_() if nonlinearity == "tanh" else a.relu_()


def _activation_derivative(h: Tensor, nonlinearity: str) -> Tensor:
    """f'(a) from the output h = f(a), as a new tensor: 1 − h² for tanh, [h > 0] for relu."""
    if nonlinearity == "tanh":
        return torch.mul(h, h).neg_().add_(1)
    return (h > 0).to(h.dtype)


def _processing_order(batch_sizes: Sequence[int], reverse: bool) -> list[int]:
    steps = range(len(batch_sizes))
    return list(reversed(steps)) if reverse else list(steps)


def layer_forward(
    x: Tensor,
    h0: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    batch_sizes: Sequence[int],
    out: Tensor,
    h_n: Tensor,
    nonlinearity: str = "tanh",
    reverse: bool = False,
) -> None:
    """One layer, one direction, all steps: fills ``out`` with every h_t and ``h_n`` with the last.

    Args:
        x: (rows, D) time-major flattened input, ``batch_sizes[t]`` rows at step t.
        h0: (N, H) initial state, N = batch_sizes[0].
        W_ih: (H, D). W_hh: (H, H). b_ih, b_hh: (H,) or None.
        batch_sizes: rows per step, non-increasing (all equal for padded input).
        out: (rows, H) buffer to fill with h_t (may be a column slice of a wider buffer).
        h_n: (N, H) buffer to fill with each sequence's last state.
        reverse: run from the last step to the first (the backward direction of a bidirectional
            RNN); each sequence then starts from h0 at its own last step.
    """
    # The input projection of all steps at once: one GEMM, into the output buffer.
    out.copy_(accel.matmul(x, W_ih.t()))  # (rows, H): x_t W_ihᵀ
    if b_ih is not None:
        out.add_(b_ih + b_hh)  # + b_ih + b_hh
    if accel.available_for(out, h0, W_hh):  # the same loop in C (see _steps.c)
        accel.forward_steps(out, h0.contiguous(), W_hh, batch_sizes, h_n, nonlinearity == "relu",
                             reverse)
        return
    a_steps = out.split(list(batch_sizes))  # views: step t's (b_t, H) rows
    W_hh_T = W_hh.t()
    order = _processing_order(batch_sizes, reverse)
    h_prev = h0[: batch_sizes[order[0]]]
    for t in order:
        a_t = a_steps[t]
        b, b_prev = a_t.shape[0], h_prev.shape[0]
        if b == b_prev:  # the usual case: every row carries on from the step before
            a_t.addmm_(h_prev, W_hh_T)  # a_t = x_t W_ihᵀ + b + h_{t-1} W_hhᵀ
        elif b < b_prev:  # forward direction, packed: rows b..b_prev ended at the step before
            h_n[b:b_prev] = h_prev[b:]
            a_t.addmm_(h_prev[:b], W_hh_T)
        else:  # reverse direction, packed: rows b_prev..b start here, from h0
            a_t[:b_prev].addmm_(h_prev, W_hh_T)
            a_t[b_prev:].addmm_(h0[b_prev:b], W_hh_T)
        h_prev = _activate_(a_t, nonlinearity)  # h_t = tanh(a_t), over a_t in place
    h_n[: h_prev.shape[0]] = h_prev


def _h_prev_rows(out: Tensor, h0: Tensor, batch_sizes: Sequence[int], reverse: bool) -> Tensor:
    """h_{t-1} for every row of ``out``, in the same flattened layout (packed input only)."""
    T = len(batch_sizes)
    steps = out.split(list(batch_sizes))
    pieces = []
    for t, b in enumerate(batch_sizes):
        t_prev = t + 1 if reverse else t - 1
        carried = min(b, batch_sizes[t_prev]) if 0 <= t_prev < T else 0
        if carried:
            pieces.append(steps[t_prev][:carried])
        if carried < b:
            pieces.append(h0[carried:b])
    return torch.cat(pieces)


def layer_backward(
    dout: Tensor,
    dh_n: Tensor,
    x: Tensor,
    h0: Tensor,
    out: Tensor,
    W_ih: Tensor,
    W_hh: Tensor,
    batch_sizes: Sequence[int],
    nonlinearity: str = "tanh",
    reverse: bool = False,
    need_dx: bool = True,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """BPTT through one layer and direction; the inverse of :func:`layer_forward`.

    Args:
        dout: (rows, H) ∂L/∂h_t from the layer's output. dh_n: (N, H) ∂L/∂h_n.
        x, h0, out, W_ih, W_hh, batch_sizes, nonlinearity, reverse: as in the forward.
        need_dx: compute dx (skipped for a first layer whose input needs no gradient).

    Returns:
        dx (rows, D) or None, dh0 (N, H), dW_ih (H, D), dW_hh (H, H), db (H,).
    """
    N = h0.shape[0]
    sizes = list(batch_sizes)
    padded = len(set(sizes)) <= 1  # every step has all N rows
    order = _processing_order(sizes, reverse)
    dh = dout.clone(memory_format=torch.contiguous_format)  # (rows, H): ∂L/∂h_t, in full below
    # ∂L/∂h_n joins the rows at the step where each sequence ends (the last step processed).
    if padded:
        last_step = slice(0, N) if reverse else slice(len(dh) - N, len(dh))
        dh[last_step].add_(dh_n)
    else:
        dh_steps = dh.split(sizes)
        for k, t in enumerate(order):
            b_next = sizes[order[k + 1]] if k + 1 < len(order) else 0
            if b_next < sizes[t]:
                dh_steps[t][b_next:].add_(dh_n[b_next : sizes[t]])
    dh0 = torch.empty_like(h0, memory_format=torch.contiguous_format)
    if accel.available_for(dh, out, W_hh):  # the same loop in C, f'(a_t) recomputed per step
        accel.backward_steps(dh, out, W_hh, sizes, dh0, nonlinearity == "relu", reverse)
        da = dh
    else:
        da = _activation_derivative(out, nonlinearity)  # (rows, H): f'(a_t), then da_t
        da_steps, dh_steps = da.split(sizes), dh.split(sizes)
        for k in range(len(order) - 1, -1, -1):  # BPTT: the steps in the reverse of forward order
            t = order[k]
            da_t = da_steps[t].mul_(dh_steps[t])  # da_t = (dh_t + dh_next) ⊙ f'(a_t)
            b = da_t.shape[0]
            m = min(b, sizes[order[k - 1]]) if k > 0 else 0  # rows carried on from step t − 1
            if m:
                dh_steps[order[k - 1]][:m].addmm_(da_t[:m], W_hh)  # dh_next = da_t W_hh, into dh_{t-1}
            if m < b:  # rows that began at step t from h0: their dh_next is ∂L/∂h_0
                torch.mm(da_t[m:], W_hh, out=dh0[m:b])
        del dh, dh_steps

    # After the loop, each weight gradient is one GEMM (or reduction) over all steps at once.
    if padded:  # h_{t-1} is out shifted by one step: a view, no copy
        rows_h0 = slice(0, N) if not reverse else slice(len(out) - N, len(out))
        rows_carried = slice(N, len(out)) if not reverse else slice(0, len(out) - N)
        rows_prev = slice(0, len(out) - N) if not reverse else slice(N, len(out))
        dW_hh = accel.matmul(da[rows_carried].t(), out[rows_prev])  # dW_hh = Σ_t da_tᵀ h_{t-1}
        dW_hh.addmm_(da[rows_h0].t(), h0)
    else:
        dW_hh = accel.matmul(da.t(), _h_prev_rows(out, h0, batch_sizes, reverse))  # Σ_t da_tᵀ h_{t-1}
    dW_ih = accel.matmul(da.t(), x)  # dW_ih = Σ_t da_tᵀ x_t    (H, D)
    db = da.sum(0)  # db = Σ_t Σ_n da_t                          (H,)
    dx = accel.matmul(da, W_ih) if need_dx else None  # dx_t = da_t W_ih   (rows, D)
    return dx, dh0, dW_ih, dW_hh, db


def _dropout_mask(like: Tensor, p: float) -> Tensor:
    """Inverted-dropout mask: 0 with probability p, else 1 / (1 − p)."""
    if p >= 1:
        return torch.zeros_like(like)
    return torch.empty_like(like).bernoulli_(1 - p).div_(1 - p)


def rnn_forward(
    x: Tensor,
    hx: Tensor,
    weights: Sequence[Tensor],
    batch_sizes: Sequence[int],
    *,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    nonlinearity: str = "tanh",
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """The stacked (and optionally bidirectional) RNN, layer by layer.

    Args:
        x: (rows, D) time-major flattened input (see the module docstring).
        hx: (num_layers * dirs, N, H) initial states.
        weights: per layer and direction, in nn.RNN's order: W_ih, W_hh[, b_ih, b_hh].
        batch_sizes: rows per step.
        dropout: probability of zeroing each output of every layer but the last (0 in eval).

    Returns:
        output (rows, dirs * H) and h_n (num_layers * dirs, N, H); then, for the backward, every
        layer's input (after dropout), every layer's output (before dropout) and the dropout
        masks (one per layer but the last, only when dropout > 0).
    """
    dirs = 2 if bidirectional else 1
    per = 4 if bias else 2
    H = hx.shape[-1]
    h_n = hx.new_empty(hx.shape)  # contiguous whatever the layout of hx
    layer_inputs: list[Tensor] = []
    layer_outputs: list[Tensor] = []
    masks: list[Tensor] = []
    layer_in = x
    for layer in range(num_layers):
        if layer > 0 and dropout > 0:
            masks.append(_dropout_mask(layer_in, dropout))
            layer_in = layer_in * masks[-1]
        layer_inputs.append(layer_in)
        out = x.new_empty(x.shape[0], dirs * H)  # (rows, dirs * H): [forward | reverse]
        for d in range(dirs):
            idx = layer * dirs + d
            w = weights[idx * per : (idx + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
            layer_forward(
                layer_in, hx[idx], w[0], w[1], b_ih, b_hh, batch_sizes,
                out[:, d * H : (d + 1) * H], h_n[idx], nonlinearity, reverse=d == 1,
            )
        layer_outputs.append(out)
        layer_in = out
    return layer_in, h_n, layer_inputs, layer_outputs, masks


def rnn_backward(
    doutput: Tensor,
    dh_n: Tensor,
    hx: Tensor,
    weights: Sequence[Tensor],
    batch_sizes: Sequence[int],
    layer_inputs: Sequence[Tensor],
    layer_outputs: Sequence[Tensor],
    masks: Sequence[Tensor],
    *,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    nonlinearity: str = "tanh",
    need_dx: bool = True,
) -> tuple[Tensor | None, Tensor, list[Tensor]]:
    """BPTT through the whole stack, last layer first; the inverse of :func:`rnn_forward`.

    Takes what :func:`rnn_forward` returned for the backward. Returns dx (None unless
    ``need_dx``), dhx (num_layers * dirs, N, H), and one gradient per weight, in the order of
    ``weights``.
    """
    dirs = 2 if bidirectional else 1
    per = 4 if bias else 2
    H = hx.shape[-1]
    dhx = torch.empty_like(hx)
    dweights: list[Tensor] = []
    dout = doutput
    dx = None
    for layer in reversed(range(num_layers)):
        dx = None
        layer_dw: list[Tensor] = []
        for d in range(dirs):
            idx = layer * dirs + d
            W_ih, W_hh = weights[idx * per], weights[idx * per + 1]
            cols = slice(d * H, (d + 1) * H)
            dx_d, dhx[idx], dW_ih, dW_hh, db = layer_backward(
                dout[:, cols], dh_n[idx], layer_inputs[layer], hx[idx],
                layer_outputs[layer][:, cols], W_ih, W_hh, batch_sizes, nonlinearity,
                reverse=d == 1, need_dx=need_dx or layer > 0,
            )
            if dx_d is not None:
                dx = dx_d if dx is None else dx.add_(dx_d)  # both directions read the same input
            # b_ih and b_hh enter only as their sum, so both get db.
            layer_dw += [dW_ih, dW_hh, db, db.clone()] if bias else [dW_ih, dW_hh]
        dweights = layer_dw + dweights
        if layer > 0:
            dout = dx * masks[layer - 1] if masks else dx  # through the dropout before this layer
    return dx, dhx, dweights

