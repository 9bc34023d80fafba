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

Dropout between layers (training only): layer l > 0 reads x̃ = h ⊙ m, m = 0 or 1 / (1 − p), the
masks drawn by :func:`dropout_masks` before the forward and passed in, so that the forward is a
deterministic function of its inputs (what an operator must be); the backward multiplies by m.

What is saved for backward: the input, hx, the weights, the masks and every layer's output (the
hidden states), nothing per step; a dropped-out layer input x̃ is recomputed from its mask.
f'(a_t) is recomputed from h_t (1 − h_t² for tanh): in the PyTorch loop by one vectorised
operation before the BPTT loop; in the C loop step by step.

Second derivatives. The PyTorch loop of the backward is written out of place in differentiable
torch operations, so with ``differentiable=True`` (no C loop, no oneDNN) autograd can differentiate
our hand-written BPTT: that is how double backward (``create_graph=True``), ``torch.func.hessian``
and the like are computed. The first-order backward itself never uses autograd.

Forward mode (the tangent of every quantity written with a dot, for tangents ẋ, ḣ_0, Ẇ_ih, Ẇ_hh,
ḃ_ih, ḃ_hh of the inputs), :func:`rnn_jvp`, one sequential loop like the forward:

    ȧ_t = ẋ_t W_ihᵀ + x_t Ẇ_ihᵀ + ḃ_ih + ḃ_hh + ḣ_{t-1} W_hhᵀ + h_{t-1} Ẇ_hhᵀ
    ḣ_t = f'(a_t) ⊙ ȧ_t

Every term but ḣ_{t-1} W_hhᵀ is known before the loop (h_{t-1} is the saved output), so, as in the
forward, they are one GEMM each over all steps and only ḣ_{t-1} W_hhᵀ stays inside the loop.

The per-step loops exist twice: in PyTorch here (the reference, and the path on GPUs and for other
dtypes) and in C (``_steps.c``, loaded by ``accel``), used on the CPU for float32 and float64 when
a C compiler is present; both pass the same tests. ``SCRATCHRNN_ACCEL=0`` turns the C loops off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from scratchrnn.core import accel

__all__ = [
    "RNNForward", "dropout_masks", "layer_backward", "layer_forward", "layer_inputs", "layer_jvp",
    "rnn_backward", "rnn_forward", "rnn_jvp",
]

# --------------------------------------------------------------------------------------------
# The math: pure functions on tensors.
# --------------------------------------------------------------------------------------------


def _activate_(a: Tensor, nonlinearity: str) -> Tensor:
    """h = tanh(a) or relu(a), computed in place over a."""
    return a.tanh_() if nonlinearity == "tanh" else a.relu_()


def _activation_derivative(h: Tensor, nonlinearity: str) -> Tensor:
    """f'(a) from the output h = f(a), as a new tensor: 1 − h² for tanh; for relu, where the unit
    passes its gradient on (h > 0, and a NaN h), as a bool mask for :func:`_times_fprime`."""
    if nonlinearity == "tanh":
        return torch.mul(h, h).neg_().add_(1)
    return h.le(0).logical_not_()


def _times_fprime(d: Tensor, fprime: Tensor) -> Tensor:
    """d ⊙ f'(a). For relu a selection, not a product: 0 where the unit is off even if d is NaN,
    d where it is on or h is NaN (nn.RNN's threshold rule, which 0 · NaN = NaN would break)."""
    return d * fprime if fprime.is_floating_point() else torch.where(fprime, d, 0)


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
    # The input projection of all steps at once: one GEMM, written into the output buffer.
    out.addmm_(x, W_ih.t(), beta=0)  # (rows, H): x_t W_ihᵀ (beta = 0: the buffer is not read)
    bias = None if b_ih is None else b_ih + b_hh  # (H,)
    if accel.available_for(out, h0, W_hh):  # the same loop in C (see _steps.c); it adds the bias
        # at each step in the pass the nonlinearity makes anyway, which saves a pass over `out`
        accel.forward_steps(out, h0.contiguous(), W_hh, bias, batch_sizes, h_n,
                             nonlinearity == "relu", reverse)
        return
    if bias is not None:
        out.add_(bias)  # + b_ih + b_hh
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
    differentiable: bool = False,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """BPTT through one layer and direction; the inverse of :func:`layer_forward`.

    Args:
        dout: (rows, H) ∂L/∂h_t from the layer's output. dh_n: (N, H) ∂L/∂h_n.
        x, h0, out, W_ih, W_hh, batch_sizes, nonlinearity, reverse: as in the forward.
        need_dx: compute dx (skipped for a first layer whose input needs no gradient).
        differentiable: use only differentiable torch operations (the PyTorch loop, torch.mm), so
            that autograd can differentiate this backward (double backward).

    Returns:
        dx (rows, D) or None, dh0 (N, H), dW_ih (H, D), dW_hh (H, H), db (H,).
    """
    N = h0.shape[0]
    sizes = list(batch_sizes)
    padded = sizes[0] == sizes[-1]  # every step has all N rows (the sizes never grow)
    order = _processing_order(sizes, reverse)
    matmul = torch.mm if differentiable else accel.matmul
    if not differentiable and accel.available_for(dout, out, W_hh):
        # The same loop in C, over a buffer holding ∂L/∂h_t, turned into da in place; ∂L/∂h_n
        # joins the rows at the step where each sequence ends (the last step processed).
        da = dout.clone(memory_format=torch.contiguous_format)  # (rows, H)
        if padded:
            da[slice(0, N) if reverse else slice(len(da) - N, len(da))].add_(dh_n)
        else:
            da_steps = da.split(sizes)
            for k, t in enumerate(order):
                b_next = sizes[order[k + 1]] if k + 1 < len(order) else 0
                if b_next < sizes[t]:
                    da_steps[t][b_next:].add_(dh_n[b_next : sizes[t]])
        dh0 = torch.empty_like(h0, memory_format=torch.contiguous_format)
        accel.backward_steps(da, out, W_hh, sizes, dh0, nonlinearity == "relu", reverse)
    else:
        da, dh0 = _bptt_steps(dout, dh_n, h0, out, W_hh, sizes, order, nonlinearity)

    # After the loop, each weight gradient is one GEMM (or reduction) over all steps at once.
    if padded:  # h_{t-1} is out shifted by one step: a view, no copy
        rows_h0 = slice(0, N) if not reverse else slice(len(out) - N, len(out))
        rows_carried = slice(N, len(out)) if not reverse else slice(0, len(out) - N)
        rows_prev = slice(0, len(out) - N) if not reverse else slice(N, len(out))
        dW_hh = matmul(da[rows_carried].t(), out[rows_prev]) + da[rows_h0].t() @ h0  # Σ_t da_tᵀ h_{t-1}
    else:
        dW_hh = matmul(da.t(), _h_prev_rows(out, h0, batch_sizes, reverse))  # Σ_t da_tᵀ h_{t-1}
    dW_ih = matmul(da.t(), x)  # dW_ih = Σ_t da_tᵀ x_t    (H, D)
    db = da.sum(0)  # db = Σ_t Σ_n da_t                    (H,)
    dx = matmul(da, W_ih) if need_dx else None  # dx_t = da_t W_ih   (rows, D)
    return dx, dh0, dW_ih, dW_hh, db


def _bptt_steps(
    dout: Tensor,
    dh_n: Tensor,
    h0: Tensor,
    out: Tensor,
    W_hh: Tensor,
    sizes: list[int],
    order: list[int],
    nonlinearity: str,
) -> tuple[Tensor, Tensor]:
    """The BPTT loop in PyTorch, out of place (so autograd can differentiate it): da and dh0.

    ``dh_next`` for step t holds, for each of its rows, da W_hh from the step processed after t
    if the row carried on there, else the row's ∂L/∂h_n (the row's sequence ended at t).
    """
    fprime_steps = _activation_derivative(out, nonlinearity).split(sizes)  # f'(a_t) from h_t
    dh_steps = dout.split(sizes)
    da_steps: list[Tensor] = [dout] * len(sizes)
    dh0_pieces: list[tuple[int, Tensor]] = []
    carried = None  # da_{t+1} W_hh for the rows of step t that carried on (forward order)
    for k in range(len(order) - 1, -1, -1):  # BPTT: the steps in the reverse of forward order
        t = order[k]
        b = sizes[t]
        if carried is None:  # the last step processed: every row's sequence ends here
            dh_next = dh_n[:b]
        elif carried.shape[0] < b:  # forward direction, packed: rows m..b end at step t
            dh_next = torch.cat([carried, dh_n[carried.shape[0] : b]])
        else:
            dh_next = carried
        da_t = _times_fprime(dh_steps[t] + dh_next, fprime_steps[t])  # da_t = (dh_t + dh_next) ⊙ f'(a_t)
        da_steps[t] = da_t
        m_prev = min(b, sizes[order[k - 1]]) if k > 0 else 0  # rows carried on from step t − 1
        carried = da_t[:m_prev] @ W_hh if m_prev else None  # dh_next = da_t W_hh, into dh_{t-1}
        if m_prev < b:  # rows that began at step t from h0: their dh_next is ∂L/∂h_0
            dh0_pieces.append((m_prev, da_t[m_prev:] @ W_hh))
    dh0 = torch.cat([piece for _, piece in sorted(dh0_pieces, key=lambda p: p[0])]) if dh0_pieces \
        else torch.zeros_like(h0)
    return torch.cat(da_steps), dh0


def dropout_masks(like: Tensor, width: int, num_layers: int, p: float) -> list[Tensor]:
    """Inverted-dropout masks for the inputs of layers 1 … L − 1: 0 with probability p, else
    1 / (1 − p); shaped like ``like``'s leading dimensions × ``width``. None drawn when p = 0."""
    if p == 0:
        return []
    shape = (*like.shape[:-1], width)
    if p >= 1:
        return [like.new_zeros(shape) for _ in range(num_layers - 1)]
    return [like.new_empty(shape).bernoulli_(1 - p).div_(1 - p) for _ in range(num_layers - 1)]


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


def _layer_weights(weights: Sequence[Tensor], idx: int, bias: bool) -> tuple:
    """(W_ih, W_hh, b_ih, b_hh) of layer-and-direction ``idx``, the biases None without bias."""
    per = 4 if bias else 2
    w = weights[idx * per : (idx + 1) * per]
    return (w[0], w[1], w[2], w[3]) if bias else (w[0], w[1], None, None)


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
    nonlinearity: str = "tanh",
) -> RNNForward:
    """The stacked (and optionally bidirectional) RNN, layer by layer.

    Args:
        x: (rows, D) time-major flattened input (see the module docstring).
        hx: (num_layers * dirs, N, H) initial states.
        weights: per layer and direction, in nn.RNN's order: W_ih, W_hh[, b_ih, b_hh].
        batch_sizes: rows per step.
        masks: dropout masks (rows, dirs * H) for the inputs of layers 1 … L − 1, or none
            (no dropout); see :func:`dropout_masks`.

    Returns:
        :class:`RNNForward`: output (rows, dirs * H), h_n (num_layers * dirs, N, H) and the inner
        layers' outputs (before dropout), which the backward needs.
    """
    dirs = 2 if bidirectional else 1
    H = hx.shape[-1]
    h_n = hx.new_empty(hx.shape)  # contiguous whatever the layout of hx
    # Each layer's output, [forward | reverse]: the inner layers' in one tensor, the last apart.
    inner = x.new_empty(num_layers - 1, x.shape[0], dirs * H)  # (L − 1, rows, dirs * H)
    output = x.new_empty(x.shape[0], dirs * H)  # (rows, dirs * H)
    layer_in = x
    for layer in range(num_layers):
        if layer > 0 and masks:
            layer_in = layer_in * masks[layer - 1]
        out = inner[layer] if layer < num_layers - 1 else output
        for d in range(dirs):
            idx = layer * dirs + d
            W_ih, W_hh, b_ih, b_hh = _layer_weights(weights, idx, bias)
            layer_forward(
                layer_in, hx[idx], W_ih, W_hh, b_ih, b_hh, batch_sizes,
                out[:, d * H : (d + 1) * H], h_n[idx], nonlinearity, reverse=d == 1,
            )
        layer_in = out
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
    nonlinearity: str = "tanh",
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
    dirs = 2 if bidirectional else 1
    H = hx.shape[-1]
    inputs = layer_inputs(x, layer_outputs, masks)
    dh0s: list[Tensor] = [hx] * (num_layers * dirs)
    dweights: list[Tensor] = []
    dout = doutput
    for layer in reversed(range(num_layers)):
        dx = None
        layer_dw: list[Tensor] = []
        for d in range(dirs):
            idx = layer * dirs + d
            W_ih, W_hh, _, _ = _layer_weights(weights, idx, bias)
            cols = slice(d * H, (d + 1) * H)
            dx_d, dh0s[idx], dW_ih, dW_hh, db = layer_backward(
                dout[:, cols], dh_n[idx], inputs[layer], hx[idx],
                layer_outputs[layer][:, cols], W_ih, W_hh, batch_sizes, nonlinearity,
                reverse=d == 1, need_dx=need_dx or layer > 0, differentiable=differentiable,
            )
            if dx_d is not None:
                dx = dx_d if dx is None else dx + dx_d  # both directions read the same input
            # b_ih and b_hh enter only as their sum, so both get db.
            layer_dw += [dW_ih, dW_hh, db, db.clone()] if bias else [dW_ih, dW_hh]
        dweights = layer_dw + dweights
        if layer > 0:
            dout = dx * masks[layer - 1] if masks else dx  # through the dropout before this layer
            if dlayer_outputs and dlayer_outputs[layer - 1] is not None:
                dout = dout + dlayer_outputs[layer - 1]
    return dx, torch.stack(dh0s), dweights


def layer_jvp(
    x: Tensor,
    h0: Tensor,
    out: Tensor,
    W_hh: Tensor,
    batch_sizes: Sequence[int],
    x_dot: Tensor | None,
    h0_dot: Tensor | None,
    W_ih: Tensor,
    W_ih_dot: Tensor | None,
    W_hh_dot: Tensor | None,
    b_dot: Tensor | None,
    nonlinearity: str = "tanh",
    reverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """Forward mode through one layer and direction: the tangents ḣ_t of ``out`` and ḣ_n.

    Args:
        x, h0, out, W_ih, W_hh, batch_sizes, nonlinearity, reverse: as in :func:`layer_forward`
            (``out`` is its result, the h_t).
        x_dot (rows, D), h0_dot (N, H), W_ih_dot (H, D), W_hh_dot (H, H), b_dot (H,) = ḃ_ih + ḃ_hh:
            the tangents of the inputs, None where zero.

    Returns:
        out_dot (rows, H), the ḣ_t; h_n_dot (N, H), the tangent of each sequence's last state.
    """
    sizes = list(batch_sizes)
    N, H = h0.shape
    # Every term of ȧ_t but ḣ_{t-1} W_hhᵀ, for all steps at once.
    a_dot = out.new_zeros(out.shape)  # (rows, H)
    if x_dot is not None:
        a_dot = a_dot + x_dot @ W_ih.t()  # ẋ_t W_ihᵀ
    if W_ih_dot is not None:
        a_dot = a_dot + x @ W_ih_dot.t()  # x_t Ẇ_ihᵀ
    if b_dot is not None:
        a_dot = a_dot + b_dot  # ḃ_ih + ḃ_hh
    if W_hh_dot is not None:
        a_dot = a_dot + _h_prev_rows(out, h0, sizes, reverse) @ W_hh_dot.t()  # h_{t-1} Ẇ_hhᵀ
    fprime_steps = _activation_derivative(out, nonlinearity).split(sizes)  # f'(a_t) from h_t
    a_dot_steps = a_dot.split(sizes)
    h0_dot = h0_dot if h0_dot is not None else h0.new_zeros(N, H)
    W_hh_T = W_hh.t()
    order = _processing_order(sizes, reverse)
    h_dot_steps: list[Tensor] = [a_dot] * len(sizes)
    h_n_dot_pieces: list[tuple[int, Tensor]] = []
    h_dot_prev = h0_dot[: sizes[order[0]]]
    for t in order:
        b, b_prev = sizes[t], h_dot_prev.shape[0]
        if b < b_prev:  # forward direction, packed: rows b..b_prev ended at the step before
            h_n_dot_pieces.append((b, h_dot_prev[b:]))
            h_dot_prev = h_dot_prev[:b]
        elif b > b_prev:  # reverse direction, packed: rows b_prev..b start here, from ḣ_0
            h_dot_prev = torch.cat([h_dot_prev, h0_dot[b_prev:b]])
        a_dot_t = a_dot_steps[t] + h_dot_prev @ W_hh_T  # ȧ_t = … + ḣ_{t-1} W_hhᵀ
        h_dot_prev = h_dot_steps[t] = _times_fprime(a_dot_t, fprime_steps[t])  # ḣ_t = f'(a_t) ⊙ ȧ_t
    h_n_dot_pieces.append((0, h_dot_prev))
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
    nonlinearity: str = "tanh",
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Forward mode through the whole stack, first layer first: the jvp of :func:`rnn_forward`.

    Takes the forward's inputs and ``layer_outputs``, and the inputs' tangents (None where zero;
    the masks are constants). Returns the tangents of output, h_n and every layer's output.
    """
    dirs = 2 if bidirectional else 1
    H = hx.shape[-1]
    inputs = layer_inputs(x, layer_outputs, masks)
    h_n_dots: list[Tensor] = [hx] * (num_layers * dirs)
    out_dots: list[Tensor] = []
    in_dot = x_dot
    for layer in range(num_layers):
        if layer > 0 and masks:
            in_dot = in_dot * masks[layer - 1]  # x̃̇ = ḣ ⊙ m
        directions = []
        for d in range(dirs):
            idx = layer * dirs + d
            W_ih, W_hh, _, _ = _layer_weights(weights, idx, bias)
            W_ih_dot, W_hh_dot, b_ih_dot, b_hh_dot = _layer_weights(weights_dot, idx, bias)
            b_dot = b_ih_dot if b_hh_dot is None else b_hh_dot if b_ih_dot is None else b_ih_dot + b_hh_dot
            out_dot, h_n_dots[idx] = layer_jvp(
                inputs[layer], hx[idx], layer_outputs[layer][:, d * H : (d + 1) * H], W_hh,
                batch_sizes, in_dot, None if hx_dot is None else hx_dot[idx], W_ih, W_ih_dot,
                W_hh_dot, b_dot, nonlinearity, reverse=d == 1,
            )
            directions.append(out_dot)
        in_dot = torch.cat(directions, 1) if dirs == 2 else directions[0]
        out_dots.append(in_dot)
    return in_dot, torch.stack(h_n_dots), out_dots
