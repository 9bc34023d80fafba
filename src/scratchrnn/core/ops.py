r"""The operators: the RNN's forward and BPTT as PyTorch custom operators, and the glue to autograd.

The stack lives in :mod:`scratchrnn.core.functional`, the equations in the cells of
:mod:`scratchrnn.core.cells`; this module makes them a citizen of PyTorch 2, for every registered
cell (its name is a static string argument of the operators, ``cell``):

- ``torch.ops.scratchrnn.rnn`` (the forward) and ``torch.ops.scratchrnn.rnn_backward`` (our BPTT),
  custom operators with one kernel for every device (the C loops where :mod:`~scratchrnn.core.accel`
  can run them, CPU float32/float64; else the PyTorch loops) and a fake implementation that only
  computes shapes, so tracing (torch.compile, torch.export, ONNX) never touches a data pointer.
  ``register_autograd`` wires the backward operator to the forward one: that is the path
  torch.compile and torch.export see.
- :class:`_RNN`, an ``autograd.Function`` around the same operators for eager mode, with the same
  ``setup_context`` and backward, plus what only an ``autograd.Function`` can carry today: the
  hand-written forward mode (:func:`~scratchrnn.core.functional.rnn_jvp`, for ``torch.func.jvp``
  and ``jacfwd``, and ``torch.autograd.forward_ad``) and a vmap rule that folds the mapped
  dimension into the batch. (Dynamo refuses an ``autograd.Function`` with a custom ``jvp``, so
  under torch.compile :func:`rnn` calls the operator instead.)

What the forward saves (:class:`_Saved`): x, hx, the weights, the dropout masks and every layer's
output; nothing per step. The forward returns the inner layers' outputs (stacked in one tensor) as
an output too, which the caller drops: a second derivative must see how they depend on the inputs.

Double backward. When a graph of the backward is being built (``create_graph=True``, or inside
``torch.func.grad`` / ``jacrev`` / ``hessian``), the backward runs our BPTT's PyTorch loop, written
in differentiable torch operations (``differentiable=True``), and autograd differentiates it: the
second derivative is autograd applied to our hand-written backward. Otherwise the backward runs the
``rnn_backward`` operator (C loops, no graph).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from scratchrnn.core import cells, functional

__all__ = ["RNNConfig", "rnn"]


class RNNConfig(NamedTuple):
    """The static arguments of the operators; ``cell`` is a registered cell's name ("rnn_tanh",
    "rnn_relu", "gru", ...)."""

    num_layers: int
    bidirectional: bool
    bias: bool
    cell: str


def _batch_sizes(x: Tensor, batch_sizes: Tensor | None) -> list[int]:
    """Rows per step: a PackedSequence's ``batch_sizes``, or T × [N] for padded (T, N, D) input."""
    return batch_sizes.tolist() if batch_sizes is not None else [x.shape[1]] * x.shape[0]


def _rows(t: Tensor) -> Tensor:
    """(T, N, F) or (rows, F) → (rows, F), the flattened time-major layout of the functions
    (``flatten``, not ``reshape(-1, F)``, which cannot tell the rows when F = 0: RNNCell(n, 0))."""
    return t.flatten(0, -2)


def _own(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The kernels' outputs as tensors of their own, not views of a buffer: autograd forbids
    in-place changes to an autograd.Function's outputs that are views ("Output 0 of _RNN is a
    view and is being modified inplace"). ``detach`` gives the same memory, not tracked as a view."""
    return tuple(t.detach() for t in tensors)


def _layer_rows(inner: Tensor | None, output: Tensor | None = None) -> list:
    """The stacked inner layers' outputs (and the output) as the functions' list of (rows, F)."""
    if inner is None:
        return []
    return [_rows(h) for h in inner.unbind(0)] + ([_rows(output)] if output is not None else [])


# --------------------------------------------------------------------------------------------
# The operators.
# --------------------------------------------------------------------------------------------


_PLAIN = (Tensor, torch.nn.Parameter)


def _direct(*tensors: Tensor) -> bool:
    """Whether a kernel may be called as a plain function, skipping the dispatcher (its cost is
    most of a small call's time): real tensors (no FakeTensor, no subclass) and no dispatch mode
    (tracing, fake mode) active. Anything else goes through the operator."""
    return torch._C._len_torch_dispatch_stack() == 0 and all(type(t) in _PLAIN for t in tensors)


def _rnn_kernel(
    x: Tensor,
    hx: Tensor,
    weights: list[Tensor],
    masks: list[Tensor],
    batch_sizes: Tensor | None,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    cell: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """The RNN's forward: (output, h_n, the inner layers' outputs stacked).

    x: (T, N, D) padded (``batch_sizes`` None) or (rows, D) packed, with a PackedSequence's
    ``batch_sizes``; hx: (num_layers * dirs, N, H); masks: dropout masks shaped like the output,
    one per layer but the last, or none. output is shaped like x with dirs * H features, the
    inner outputs (num_layers − 1, *output.shape).
    """
    result = functional.rnn_forward(
        _rows(x), hx, weights, _batch_sizes(x, batch_sizes), [_rows(m) for m in masks],
        num_layers=num_layers, bidirectional=bidirectional, bias=bias, cell=cell,
    )
    shape = (*x.shape[:-1], result.output.shape[-1])
    return _own(result.output.view(shape), result.h_n, result.inner.view(num_layers - 1, *shape))


_rnn_op = torch.library.custom_op("scratchrnn::rnn", _rnn_kernel, mutates_args=())


@_rnn_op.register_fake
def _(x, hx, weights, masks, batch_sizes, num_layers, bidirectional, bias, cell):
    shape = (*x.shape[:-1], (2 if bidirectional else 1) * hx.shape[-1])
    return x.new_empty(shape), hx.new_empty(hx.shape), x.new_empty(num_layers - 1, *shape)


def _rnn_backward_kernel(
    doutput: Tensor,
    dh_n: Tensor,
    dinner: Tensor | None,
    x: Tensor,
    hx: Tensor,
    weights: list[Tensor],
    masks: list[Tensor],
    inner: Tensor,
    output: Tensor,
    batch_sizes: Tensor | None,
    num_layers: int,
    bidirectional: bool,
    bias: bool,
    cell: str,
    need_dx: bool,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Our BPTT: (dx, dhx, one gradient per weight); dx has no elements unless ``need_dx``.

    Takes the upstream gradients (``dinner``: those reaching the inner layers' outputs directly,
    or None), the forward's inputs and its outputs.
    """
    dx, dhx, dweights = functional.rnn_backward(
        _rows(doutput), dh_n, _rows(x), hx, weights, _batch_sizes(x, batch_sizes),
        _layer_rows(inner, output), [_rows(m) for m in masks], _layer_rows(dinner),
        num_layers=num_layers, bidirectional=bidirectional, bias=bias, cell=cell,
        need_dx=need_dx,
    )
    return (dx.view(x.shape) if dx is not None else x.new_empty(0)), dhx, dweights


_rnn_backward_op = torch.library.custom_op("scratchrnn::rnn_backward", _rnn_backward_kernel, mutates_args=())


@_rnn_backward_op.register_fake
def _(doutput, dh_n, dinner, x, hx, weights, masks, inner, output, batch_sizes,
      num_layers, bidirectional, bias, cell, need_dx):
    dx = x.new_empty(x.shape) if need_dx else x.new_empty(0)
    return dx, hx.new_empty(hx.shape), [w.new_empty(w.shape) for w in weights]


# --------------------------------------------------------------------------------------------
# Autograd: what is saved, and the backward, shared by the operator and the eager Function.
# --------------------------------------------------------------------------------------------


class _Saved(NamedTuple):
    """What the backward (and the forward mode) reads, by name."""

    x: Tensor
    hx: Tensor
    weights: list[Tensor]
    masks: list[Tensor]
    inner: Tensor  # (num_layers − 1, *output.shape): the inner layers' outputs
    output: Tensor

    def flat(self) -> list[Tensor]:
        return [self.x, self.hx, *self.weights, *self.masks, self.inner, self.output]

    @classmethod
    def unflat(cls, tensors, num_weights: int, num_masks: int) -> _Saved:
        x, hx, *rest = tensors
        w, m = num_weights, num_weights + num_masks
        return cls(x, hx, rest[:w], rest[w:m], *rest[m:])


def _save(ctx, saved: _Saved, batch_sizes: Tensor | None, config: RNNConfig) -> None:
    ctx.save_for_backward(*saved.flat())
    ctx.counts = (len(saved.weights), len(saved.masks))
    ctx.batch_sizes, ctx.config = batch_sizes, config
    ctx.set_materialize_grads(False)  # an unused output's gradient stays None: nothing to add


def _backward(ctx, doutput, dh_n, dinner, need_dx: bool) -> tuple:
    """(dx, dhx, dweights) from the upstream gradients; None for dx unless ``need_dx``."""
    if any(_batched(g) for g in (doutput, dh_n, dinner)):
        return _backward_per_grad(ctx, doutput, dh_n, dinner, need_dx)
    saved = _Saved.unflat(ctx.saved_tensors, *ctx.counts)
    x, hx, output = saved.x, saved.hx, saved.output
    doutput = torch.zeros_like(output) if doutput is None else doutput
    dh_n = torch.zeros_like(hx) if dh_n is None else dh_n
    if torch.is_grad_enabled():  # a graph of this backward is wanted: differentiable torch ops
        dx, dhx, dweights = functional.rnn_backward(
            _rows(doutput), dh_n, _rows(x), hx, saved.weights, _batch_sizes(x, ctx.batch_sizes),
            _layer_rows(saved.inner, output), [_rows(m) for m in saved.masks], _layer_rows(dinner),
            **ctx.config._asdict(), need_dx=need_dx, differentiable=True,
        )
        return (dx.view(x.shape) if dx is not None else None), dhx, dweights
    kernel = _rnn_backward_kernel if _direct(doutput, x) else _rnn_backward_op
    dx, dhx, dweights = kernel(
        doutput, dh_n, dinner, x, hx, saved.weights, saved.masks, saved.inner, output,
        ctx.batch_sizes, *ctx.config, need_dx,
    )
    return (dx if need_dx else None), dhx, dweights


def _batched(g: Tensor | None) -> bool:
    F = torch._C._functorch
    return g is not None and (F.is_legacy_batchedtensor(g) or F.is_batchedtensor(g))


def _backward_per_grad(ctx, doutput, dh_n, dinner, need_dx: bool) -> tuple:
    """The backward of B gradients at once, one backward each, stacked.

    ``autograd.grad(is_grads_batched=True)``, ``jacobian(vectorize=True)`` and gradcheck's
    batched-gradient check run the backward under torch's legacy vmap, ``torch.func.vmap`` over
    ``autograd.grad`` under torch.func's: their batched tensors neither the C loops nor ``detach``
    and the views of the PyTorch loops can take ("Batching rule not implemented for aten::alias",
    "Cannot access data pointer"). The batch dimension is taken off, and put back on the results.
    """
    F = torch._C._functorch
    grads = (doutput, dh_n, dinner)
    if any(g is not None and F.is_legacy_batchedtensor(g) for g in grads):
        level = torch._C._vmapmode_increment_nesting() - 1  # the innermost legacy vmap's level
        torch._C._vmapmode_decrement_nesting()
        unbatch = lambda g: torch._remove_batch_dim(g, level, 1, 0)  # noqa: E731
        add_batch_dim = torch._add_batch_dim
    else:
        level = max(F.maybe_get_level(g) for g in grads if _batched(g))

        def unbatch(g):  # None where g is batched at another level only
            t, dim = F._unwrap_batched(g, level)
            return None if dim is None else t.movedim(dim, 0)

        add_batch_dim = F._add_batch_dim
    stacked = [unbatch(g) if _batched(g) else None for g in grads]
    B = next(s.shape[0] for s in stacked if s is not None)
    pick = lambda b: (g if s is None else s[b] for g, s in zip(grads, stacked, strict=True))  # noqa: E731
    per_grad = [_backward(ctx, *pick(b), need_dx) for b in range(B)]
    dx, dhx, dweights = zip(*per_grad, strict=True)

    def rebatch(ts):  # B results → one tensor batched at ``level``
        return None if ts[0] is None else add_batch_dim(torch.stack(ts), 0, level)

    return rebatch(dx), rebatch(dhx), [rebatch(dw) for dw in zip(*dweights, strict=True)]


def _op_setup_context(ctx, inputs, output) -> None:
    x, hx, weights, masks, batch_sizes, *config = inputs
    out, _, inner = output
    _save(ctx, _Saved(x, hx, weights, masks, inner, out), batch_sizes, RNNConfig(*config))


def _op_backward(ctx, doutput, dh_n, dinner):
    dx, dhx, dweights = _backward(ctx, doutput, dh_n, dinner, ctx.needs_input_grad[0])
    return dx, dhx, dweights, [None] * ctx.counts[1], None, None, None, None, None


_rnn_op.register_autograd(_op_backward, setup_context=_op_setup_context)


def _register_operator_autocast(lib: torch.library.Library, device_type: str) -> None:
    """The operator's own autocast rule, for callers that reach ``torch.ops.scratchrnn.rnn``
    without :func:`rnn` (an exported program run under autocast): what
    ``torch.library.register_autocast`` registers, with the region's dtype instead of a fixed one."""
    key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
    keys = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

    def kernel(_keyset, x, hx, weights, masks, batch_sizes, *config):
        with torch._C._ExcludeDispatchKeyGuard(keys):
            return _rnn_op(*_autocast(x, hx, weights, masks), batch_sizes, *config)

    lib.impl("rnn", kernel, key, with_keyset=True)


_LIB = torch.library.Library("scratchrnn", "IMPL")  # kept alive: it owns the registrations
for _device_type in ("cpu", "cuda"):
    _register_operator_autocast(_LIB, _device_type)


# --------------------------------------------------------------------------------------------
# The eager path: an autograd.Function with the forward mode and the vmap rule.
# --------------------------------------------------------------------------------------------


class _RNN(torch.autograd.Function):
    """The stacked RNN as one autograd node: forward and backward through the operators above,
    the tangent recurrence of :func:`~scratchrnn.core.functional.rnn_jvp`, vmap by folding.

    ``apply(x, hx, batch_sizes, config, num_weights, *weights, *masks)`` →
    ``(output, h_n, inner)``, as the operator.
    """

    @staticmethod
    def forward(x, hx, batch_sizes, config, num_weights, *weights_and_masks):
        weights, masks = weights_and_masks[:num_weights], weights_and_masks[num_weights:]
        kernel = _rnn_kernel if _direct(x, hx) else _rnn_op
        return kernel(x, hx, list(weights), list(masks), batch_sizes, *config)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, hx, batch_sizes, config, num_weights, *weights_and_masks = inputs
        saved = _Saved(x, hx, weights_and_masks[:num_weights], weights_and_masks[num_weights:],
                       output[2], output[0])
        _save(ctx, saved, batch_sizes, config)
        ctx.save_for_forward(*saved.flat())

    @staticmethod
    def backward(ctx, doutput, dh_n, dinner):
        dx, dhx, dweights = _backward(ctx, doutput, dh_n, dinner, ctx.needs_input_grad[0])
        return dx, dhx, None, None, None, *dweights, *(None for _ in range(ctx.counts[1]))

    @staticmethod
    def jvp(ctx, x_dot, hx_dot, _batch_sizes_dot, _config_dot, _num_weights_dot, *weights_dot):
        saved = _Saved.unflat(ctx.saved_tensors, *ctx.counts)
        x = saved.x
        output_dot, h_n_dot, layer_outputs_dot = functional.rnn_jvp(
            _rows(x), saved.hx, saved.weights, _batch_sizes(x, ctx.batch_sizes),
            _layer_rows(saved.inner, saved.output), [_rows(m) for m in saved.masks],
            None if x_dot is None else _rows(x_dot), hx_dot, weights_dot[: ctx.counts[0]],
            **ctx.config._asdict(),
        )
        inner_dot = saved.inner.new_empty(saved.inner.shape) if len(saved.inner) == 0 else \
            torch.stack(layer_outputs_dot[:-1]).view(saved.inner.shape)
        return output_dot.view(saved.output.shape), h_n_dot, inner_dot

    @staticmethod
    def vmap(info, in_dims, x, hx, batch_sizes, config, num_weights, *weights_and_masks):
        """The mapped dimension B folded into the batch: (T, B, N, ·) → (T, B·N, ·), one call.

        Packed input, weights that are themselves mapped, or a cell's per-sequence masks cannot be
        folded: one call per element of B instead, stacked.
        """
        B = info.batch_size
        x_dim, hx_dim = in_dims[0], in_dims[1]
        weight_dims, mask_dims = in_dims[5 : 5 + num_weights], in_dims[5 + num_weights :]
        # A cell's per-sequence masks (recurrent dropout's (N, H)) do not fold as (T, N, ·) do.
        per_sequence = "sequence" in cells.get(config.cell).noise
        if batch_sizes is not None or any(d is not None for d in weight_dims) or per_sequence:
            args = (x, hx, batch_sizes, config, num_weights, *weights_and_masks)
            results = [
                _RNN.apply(*(a.select(d, b) if isinstance(a, Tensor) and d is not None else a
                             for a, d in zip(args, in_dims, strict=True)))
                for b in range(B)
            ]
            return tuple(torch.stack(outs) for outs in zip(*results, strict=True)), 0

        def fold(t: Tensor, dim: int | None) -> Tensor:  # (T, N, ·) mapped at dim → (T, B·N, ·)
            t = t.unsqueeze(1).expand(t.shape[0], B, *t.shape[1:]) if dim is None else t.movedim(dim, 1)
            return t.reshape(t.shape[0], -1, t.shape[-1])

        masks = [fold(m, d) for m, d in zip(weights_and_masks[num_weights:], mask_dims, strict=True)]
        output, h_n, inner = _RNN.apply(fold(x, x_dim), fold(hx, hx_dim), None, config, num_weights,
                                        *weights_and_masks[:num_weights], *masks)
        N = output.shape[1] // B
        unfold = lambda t: t.view(*t.shape[:-2], B, N, t.shape[-1])  # noqa: E731  (…, B·N, ·) → (…, B, N, ·)
        return (unfold(output), unfold(h_n), unfold(inner)), (1, 1, 2)


def _autocasting(device_type: str) -> bool:
    return torch._C._is_any_autocast_enabled() and torch.amp.is_autocast_available(device_type) \
        and torch.is_autocast_enabled(device_type)


def _autocast(x: Tensor, hx: Tensor, weights: list[Tensor], masks: list[Tensor]) -> tuple:
    """(x, hx, weights, masks) in the dtype of the enclosing ``torch.autocast`` region, which
    lists nn.RNN's operators among those run in lower precision; as autocast does, float64
    stays. The casts are differentiable: the gradients reach the float32 parameters as float32."""
    dtype = torch.get_autocast_dtype(x.device.type)
    cast = lambda t: t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t  # noqa: E731
    return cast(x), cast(hx), [cast(w) for w in weights], [cast(m) for m in masks]


_copy_on_write = getattr(torch, "_lazy_clone", torch.clone)  # torch.clone where torch lacks it


def _needs_autograd(*tensors: Tensor) -> bool:
    """Whether the Function is needed: a gradient is wanted, or forward-mode AD or a torch.func
    transform (whose wrapped tensors look like plain ones) is active."""
    return (
        (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        or torch.autograd.forward_ad._current_level >= 0
        or torch._C._are_functorch_transforms_active()
    )


def _check_devices(x: Tensor, hx: Tensor, weights: list[Tensor]) -> None:
    """nn.RNN's rule, as its error says it: input, state and parameters on one device. Without it a
    meta input to a CPU module gives a meta output, having computed nothing."""
    device = weights[0].device
    for name, t in (("input", x), ("hidden", hx)):
        if t.device != device:
            raise RuntimeError(f"Input and parameter tensors are not at the same device, found {name} tensor "
                               f"at {t.device} and parameter tensor at {device}")


def rnn(
    x: Tensor,
    hx: Tensor,
    weights: list[Tensor],
    masks: list[Tensor],
    batch_sizes: Tensor | None,
    config: RNNConfig,
) -> tuple[Tensor, Tensor]:
    """The RNN, (output, h_n), with our hand-written backward and forward mode (see the module
    docstring); arguments as for ``torch.ops.scratchrnn.rnn``."""
    if _autocasting(x.device.type):  # as nn.RNN: in autocast's dtype, cast back in backward
        with torch.autocast(x.device.type, enabled=False):
            return rnn(*_autocast(x, hx, weights, masks), batch_sizes, config)
    # Dynamo cannot trace an autograd.Function with a jvp; torch.jit.trace records operators.
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        output, h_n, _ = _rnn_op(x, hx, weights, masks, batch_sizes, *config)
        return output, h_n
    _check_devices(x, hx, weights)
    if not _needs_autograd(x, hx, *weights) and _direct(x, hx):  # no derivative of any kind wanted
        output, h_n, _ = _rnn_kernel(x, hx, weights, masks, batch_sizes, *config)
        return output, h_n
    output, h_n, _ = _RNN.apply(x, hx, batch_sizes, config, len(weights), *weights, *masks)
    # The backward reads the output it saved: the caller gets a copy it may change in place
    # (`out += residual`, ReLU(inplace=True)), as nn.RNN's CPU output allows. A copy-on-write one:
    # no memory and no time unless the caller does write to it (the C loops read it as const).
    copy = torch.clone if torch._C._are_functorch_transforms_active() else _copy_on_write  # vmap: no rule
    return copy(output), h_n
