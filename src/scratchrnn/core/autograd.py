"""The autograd glue: the whole stacked RNN as one autograd node whose backward is our BPTT.

The math lives in :mod:`scratchrnn.core.functional`; this module only connects it to autograd:
:class:`_RNNFunction` calls :func:`~scratchrnn.core.functional.rnn_forward`, saves what the
backward needs, and its backward calls :func:`~scratchrnn.core.functional.rnn_backward` with no
autograd inside. :func:`guard_double_backward` makes a second derivative through any of our
hand-written backwards raise instead of silently leaving their part out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from scratchrnn.core.functional import rnn_backward, rnn_forward

__all__ = ["guard_double_backward", "run_rnn"]


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
            )
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


def run_rnn(x, hx, weights, batch_sizes, config):
    """Forward through the autograd Function when a gradient is wanted, else the bare math."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, hx, *weights)):
        return _RNNFunction.apply(x, hx, batch_sizes, config, *weights)
    output, h_n, *_ = rnn_forward(x, hx, weights, batch_sizes, **config)
    return output, h_n

