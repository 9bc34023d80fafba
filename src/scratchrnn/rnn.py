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
either order (see ``scratchrnn.reference`` for the time-major loop and the test proving it).

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
dtypes) and in C (``_steps.c``, loaded by ``_accel``), used on the CPU for float32 and float64 when
a C compiler is present; both pass the same tests. ``SCRATCHRNN_ACCEL=0`` turns the C loops off.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from scratchrnn import _accel

__all__ = ["RNN", "RNNCell", "guard_double_backward", "rnn_backward", "rnn_forward"]

_ACTIVATIONS = ("tanh", "relu")


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
    out.copy_(_accel.matmul(x, W_ih.t()))  # (rows, H): x_t W_ihᵀ
    if b_ih is not None:
        out.add_(b_ih + b_hh)  # + b_ih + b_hh
    if _accel.usable(out, h0, W_hh):  # the same loop in C (see _steps.c)
        _accel.forward_steps(out, h0.contiguous(), W_hh, batch_sizes, h_n, nonlinearity == "relu",
                             reverse)  # fmt: skip
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
    if _accel.usable(dh, out, W_hh):  # the same loop in C, f'(a_t) recomputed per step
        _accel.backward_steps(dh, out, W_hh, sizes, dh0, nonlinearity == "relu", reverse)
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
        dW_hh = _accel.matmul(da[rows_carried].t(), out[rows_prev])  # dW_hh = Σ_t da_tᵀ h_{t-1}
        dW_hh.addmm_(da[rows_h0].t(), h0)
    else:
        dW_hh = _accel.matmul(da.t(), _h_prev_rows(out, h0, batch_sizes, reverse))  # Σ_t da_tᵀ h_{t-1}
    dW_ih = _accel.matmul(da.t(), x)  # dW_ih = Σ_t da_tᵀ x_t    (H, D)
    db = da.sum(0)  # db = Σ_t Σ_n da_t                          (H,)
    dx = _accel.matmul(da, W_ih) if need_dx else None  # dx_t = da_t W_ih   (rows, D)
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
            )  # fmt: skip
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
            )  # fmt: skip
            if dx_d is not None:
                dx = dx_d if dx is None else dx.add_(dx_d)  # both directions read the same input
            # b_ih and b_hh enter only as their sum, so both get db.
            layer_dw += [dW_ih, dW_hh, db, db.clone()] if bias else [dW_ih, dW_hh]
        dweights = layer_dw + dweights
        if layer > 0:
            dout = dx * masks[layer - 1] if masks else dx  # through the dropout before this layer
    return dx, dhx, dweights


class _RNNFunction(torch.autograd.Function):
    """The whole stacked RNN as one autograd node whose backward is :func:`rnn_backward`."""

    @staticmethod
    def forward(ctx, x, hx, batch_sizes, config, *weights):
        output, h_n, layer_inputs, layer_outputs, masks = rnn_forward(
            x, hx, weights, batch_sizes, **config
        )
        # Without dropout, layer l's output is layer l + 1's input: the same tensor, saved once.
        inner = layer_outputs[:-1] if masks else []
        ctx.save_for_backward(x, hx, *weights, *layer_inputs[1:], *inner, output, *masks)
        ctx.num_weights = len(weights)
        ctx.batch_sizes, ctx.config = batch_sizes, config
        return output, h_n

    @staticmethod
    def backward(ctx, doutput, dh_n):
        saved = list(ctx.saved_tensors)
        L, nw = ctx.config["num_layers"], ctx.num_weights
        x, hx, weights, rest = saved[0], saved[1], saved[2 : 2 + nw], saved[2 + nw :]
        layer_inputs = [x, *rest[: L - 1]]
        rest = rest[L - 1 :]
        if len(rest) > 1:  # dropout was on: inner outputs, output, masks
            layer_outputs, masks = rest[:L], rest[L:]
        else:
            layer_outputs, masks = [*layer_inputs[1:], rest[0]], []
        config = {k: v for k, v in ctx.config.items() if k != "dropout"}
        with torch.no_grad():  # the backward is our arithmetic, never recorded by autograd
            dx, dhx, dweights = rnn_backward(
                doutput, dh_n, hx, weights, ctx.batch_sizes, layer_inputs,
                layer_outputs, masks, need_dx=ctx.needs_input_grad[0], **config,
            )  # fmt: skip
        return guard_double_backward((dx, dhx, None, None, *dweights), doutput, dh_n, *saved)


def guard_double_backward(grads: Sequence[Tensor | None], *anchors: Tensor) -> tuple:
    """For a hand-written backward: return ``grads`` so that differentiating them raises.

    Called at the end of a backward with everything the gradients depend on (upstream gradients,
    saved inputs and weights) as ``anchors``. Outside ``create_graph=True`` it returns ``grads``
    as they are; inside, it ties them to the anchors through a node whose backward raises.
    """
    if not torch.is_grad_enabled():  # the usual backward: no graph is being built
        return tuple(grads)
    tied = [t for t in anchors if isinstance(t, Tensor) and t.requires_grad]
    present = [g for g in grads if g is not None]
    guarded = iter(_NoDoubleBackward.apply(len(tied), *tied, *present))
    return tuple(next(guarded) if g is not None else None for g in grads)


class _NoDoubleBackward(torch.autograd.Function):
    """Passes gradients on unchanged, tied to everything they depend on; differentiating them raises.

    PyTorch's ``once_differentiable`` ties its guard to the gradients alone, so a second derivative
    taken with respect to the RNN's input skips the guard and silently leaves the RNN's part out.
    Tying the guard to the saved input, weights and upstream gradients makes any path through the
    RNN's backward hit it.
    """

    @staticmethod
    def forward(ctx, num_anchors, *tensors):
        return tuple(g.clone() for g in tensors[num_anchors:])

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(
            "scratchrnn: its hand-written backwards (the RNN's, the language model's) are not "
            "differentiable; double backward (differentiating a gradient taken with "
            "create_graph=True) is not supported"
        )


def _run(x, hx, weights, batch_sizes, config):
    """Forward through the autograd Function when a gradient is wanted, else the bare math."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, hx, *weights)):
        return _RNNFunction.apply(x, hx, batch_sizes, config, *weights)
    output, h_n, *_ = rnn_forward(x, hx, weights, batch_sizes, **config)
    return output, h_n


# --------------------------------------------------------------------------------------------
# The modules: torch.nn.RNN's and torch.nn.RNNCell's interface over the math above.
# --------------------------------------------------------------------------------------------


def _check_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")


def _check_nonlinearity(nonlinearity) -> None:
    if nonlinearity not in _ACTIVATIONS:
        raise ValueError(
            f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
        )


class RNN(nn.Module):
    r"""A multi-layer Elman RNN with tanh or ReLU, a drop-in for :class:`torch.nn.RNN`.

    For each element of the input sequence, each layer computes

        h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)

    where x_t is the input at time t for the first layer and the previous layer's output h_t
    (after dropout, in training) for the others. Forward and backward are the hand-written
    functions of :mod:`scratchrnn.rnn`; the gradients are exact, not autograd's.

    Args:
        input_size: D, the number of features of x_t.
        hidden_size: H, the number of features of h_t.
        num_layers: the number of stacked layers. Default: 1.
        nonlinearity: ``'tanh'`` or ``'relu'``. Default: ``'tanh'``.
        bias: if False, no b_ih and b_hh. Default: True.
        batch_first: if True, input and output are (N, T, feature); hx and h_n stay
            (layers * dirs, N, H). Default: False.
        dropout: if non-zero, dropout with this probability on the outputs of every layer but
            the last, in training only. Default: 0.
        bidirectional: if True, each layer also runs from the last step to the first, and its
            output is [forward | reverse] on the last dimension. Default: False.
        device, dtype: where and in what type to create the parameters.

    Inputs: input, hx
        - **input**: (T, N, D), (N, T, D) with ``batch_first``, (T, D) unbatched, or a
          :class:`~torch.nn.utils.rnn.PackedSequence`.
        - **hx**: (num_layers * dirs, N, H), or (num_layers * dirs, H) unbatched; zeros if omitted.

    Outputs: output, h_n
        - **output**: (T, N, dirs * H) (or (N, T, dirs * H), (T, dirs * H), or a PackedSequence):
          h_t of the last layer, both directions.
        - **h_n**: (num_layers * dirs, N, H): each layer's and direction's final state, indexed
          layer * dirs + direction; with packed input, taken at each sequence's own last step.

    Attributes:
        weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and ``_reverse``): shaped,
        named, ordered and initialised (U(−1/√H, 1/√H)) exactly like nn.RNN's, so the same seed
        gives the same weights and state_dicts load both ways.

    Example:
        >>> rnn = RNN(10, 20, num_layers=2)
        >>> output, h_n = rnn(torch.randn(5, 3, 10))  # (5, 3, 20), (2, 3, 20)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if kwargs:
            raise TypeError(f"RNN got unexpected keyword arguments: {sorted(kwargs)}")
        super().__init__()
        _check_nonlinearity(nonlinearity)
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of "
                f"an element being zeroed, got {dropout!r}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=2,
            )
        for name, flag in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(flag).__name__}")
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        _check_size("num_layers", num_layers)

        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self.nonlinearity = nonlinearity
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        factory = {"device": device, "dtype": dtype}
        dirs = 2 if bidirectional else 1
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(dirs):
                layer_input_size = input_size if layer == 0 else hidden_size * dirs
                suffix = "_reverse" if direction == 1 else ""
                shapes = {
                    f"weight_ih_l{layer}{suffix}": (hidden_size, layer_input_size),
                    f"weight_hh_l{layer}{suffix}": (hidden_size, hidden_size),
                }
                if bias:
                    shapes[f"bias_ih_l{layer}{suffix}"] = (hidden_size,)
                    shapes[f"bias_hh_l{layer}{suffix}"] = (hidden_size,)
                for name, shape in shapes.items():
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._flat_weights_names.extend(shapes)
                self._all_weights.append(list(shapes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) for every parameter, in registration order (as nn.RNN does)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters grouped per layer and direction, as nn.RNN's ``all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op, kept for nn.RNN compatibility (only cuDNN needs flat weights)."""

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    def _check_input(self, x: Tensor, hx: Tensor, expected_dim: int, N: int) -> None:
        weight = self.weight_ih_l0
        if x.dtype != weight.dtype:
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: model.to({x.dtype})"
            )
        if x.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {x.dim()}")
        if x.size(-1) != self.input_size:
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {x.size(-1)}"
            )
        dirs = 2 if self.bidirectional else 1
        expected = (self.num_layers * dirs, N, self.hidden_size)
        if hx.shape != expected:
            raise RuntimeError(f"Expected hidden size {expected}, got {list(hx.shape)}")
        if hx.dtype != weight.dtype:
            raise RuntimeError(f"Expected hx of dtype {weight.dtype}, got {hx.dtype}")

    def forward(self, input, hx: Tensor | None = None):
        dirs = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes_t, sorted_indices, unsorted_indices = input
            batch_sizes = batch_sizes_t.tolist()
            N = batch_sizes[0]
            if hx is not None and sorted_indices is not None:
                hx = hx.index_select(1, sorted_indices)  # hx follows the caller's batch order
            expected_dim = 2
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead"
                )
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)  # (T, 1, D): unbatched ignores batch_first
            if batched and self.batch_first:
                x = x.transpose(0, 1)  # time-major (T, N, D)
            if hx is not None and hx.dim() != (3 if batched else 2):
                raise RuntimeError(
                    f"For {'batched 3' if batched else 'unbatched 2'}-D input, hx should also be "
                    f"{3 if batched else 2}-D but got {hx.dim()}-D tensor"
                )
            if hx is not None and not batched:
                hx = hx.unsqueeze(1)
            T, N = x.shape[0], x.shape[1]
            batch_sizes = [N] * T
            expected_dim = 3
        if hx is None:
            hx = x.new_zeros(self.num_layers * dirs, N, self.hidden_size)
        self._check_input(x, hx, expected_dim, N)
        if not batch_sizes:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN, got 0")

        x_flat = x if packed else x.reshape(-1, x.shape[-1])  # (rows, D), time-major
        config = {
            "num_layers": self.num_layers,
            "bidirectional": self.bidirectional,
            "bias": self.bias,
            "nonlinearity": self.nonlinearity,
            "dropout": self.dropout if self.training else 0.0,
        }
        output, h_n = _run(x_flat, hx, self._flat_weights, batch_sizes, config)

        if packed:
            if unsorted_indices is not None:
                h_n = h_n.index_select(1, unsorted_indices)
            return PackedSequence(output, batch_sizes_t, sorted_indices, unsorted_indices), h_n
        output = output.view(T, N, dirs * self.hidden_size)
        if not batched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n


class RNNCell(nn.Module):
    r"""One step of an Elman RNN, a drop-in for :class:`torch.nn.RNNCell`.

        h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)        (or relu)

    It is the T = 1 case of :class:`RNN` and runs through the same hand-written forward and
    backward.

    Args:
        input_size: D. hidden_size: H. bias: use b_ih and b_hh (default True).
        nonlinearity: ``'tanh'`` (default) or ``'relu'``. device, dtype: for the parameters.

    Inputs: input (N, D) or (D), hx (N, H) or (H) (zeros if omitted).
    Outputs: h' (N, H) or (H).

    Attributes: weight_ih (H, D), weight_hh (H, H), bias_ih (H), bias_hh (H), initialised
    U(−1/√H, 1/√H) in that order, as nn.RNNCell's.

    Example:
        >>> cell = RNNCell(10, 20)
        >>> h = cell(torch.randn(3, 10))  # (3, 20)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        _check_nonlinearity(nonlinearity)
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.nonlinearity = nonlinearity
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) for every parameter, in registration order (as nn.RNNCell does)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.nonlinearity != "tanh":
            s += ", nonlinearity={nonlinearity}"
        return s.format(**self.__dict__)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        _check_nonlinearity(self.nonlinearity)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)  # (N, D)
        N = x.shape[0]
        if hx is None:
            hx = x.new_zeros(N, self.hidden_size)
        elif not batched:
            hx = hx.unsqueeze(0)
        if x.shape[1] != self.input_size:
            raise RuntimeError(
                f"RNNCell: Expected input with {self.input_size} features, got {x.shape[1]}"
            )
        if hx.shape != (N, self.hidden_size):
            raise RuntimeError(
                f"RNNCell: Expected hidden of shape {(N, self.hidden_size)}, got {tuple(hx.shape)}"
            )
        if x.dtype != self.weight_ih.dtype or hx.dtype != self.weight_ih.dtype:
            raise RuntimeError(
                f"RNNCell: Expected input and hidden of dtype {self.weight_ih.dtype}, "
                f"got {x.dtype} and {hx.dtype}"
            )
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        weights = [p for p in params if p is not None]
        config = {
            "num_layers": 1,
            "bidirectional": False,
            "bias": self.bias,
            "nonlinearity": self.nonlinearity,
            "dropout": 0.0,
        }
        h, _ = _run(x, hx.unsqueeze(0), weights, [N], config)
        return h if batched else h.squeeze(0)
