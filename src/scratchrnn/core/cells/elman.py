r"""The Elman cell, tanh or ReLU: ``rnn_tanh`` and ``rnn_relu`` (torch.nn.RNN's); also ``rnn_gelu``,
``rnn_silu``, ``rnn_softsign``, ``rnn_sigmoid``, ``rnn_leaky_relu`` and ``rnn_<name>`` for a user's
:class:`~scratchrnn.core.cells.activations.Activation` (f and f' in that file). tanh and relu run
the C loop of ``cells/elman.c``, the other built-ins that of ``cells/options.c`` (f' recomputed
there from a_t), a user's Activation the PyTorch loop.

Forward, one step (rows are batch elements, so weights act from the right):

    xp_t = x_t W_ihᵀ                                         (before the loop, for all steps)
    a_t  = xp_t + b_ih + b_hh + h_{t−1} W_hhᵀ              pre-activation      (b, H)
    h_t  = tanh(a_t)            (or relu(a_t))             hidden state        (b, H)

Backward, given dh_t (the total ∂L/∂h_t: from the output, plus da_{t+1} W_hh from the step after):

    da_t = dh_t ⊙ (1 − h_t²)        (relu: ⊙ [h_t > 0])
    dxp_t = dhp_t = da_t            (xp and hp enter as a sum, so b_ih and b_hh get the same db)

Tangent: ȧ_t = ẋp_t + ḣp_t, ḣ_t = f'(a_t) ⊙ ȧ_t.

What the backward reads: f'(a_t), recomputed from h_t (1 − h_t² for tanh), nothing else.

The step works in place in the layer's output buffer: :meth:`Elman.project` writes x W_ihᵀ there
(beta = 0: the buffer is not read), each step adds the bias and h_{t−1} W_hhᵀ and applies tanh over
it. The C loop (``_steps.c`` through :mod:`~scratchrnn.core.accel`) adds the bias inside the pass
the nonlinearity makes anyway, which saves a pass over the buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchrnn.core import accel
from scratchrnn.core.cells.activations import BUILT_IN, Activation
from scratchrnn.core.cells.base import Cell

__all__ = ["Elman"]


def times_fprime(d: Tensor, fprime: Tensor) -> Tensor:
    """d ⊙ f'(a). For relu a selection, not a product: 0 where the unit is off even if d is NaN,
    d where it is on or h is NaN (nn.RNN's threshold rule, which 0 · NaN = NaN would break)."""
    return d * fprime if fprime.is_floating_point() else torch.where(fprime, d, 0)


class Elman(Cell):
    """h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh), or relu: see the module docstring."""

    gates = 1

    def __init__(self, nonlinearity: str | Activation) -> None:
        if isinstance(nonlinearity, Activation):
            self.activation = nonlinearity
        elif nonlinearity in BUILT_IN:
            self.activation = BUILT_IN[nonlinearity]
        else:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from "
                             f"{', '.join(map(repr, BUILT_IN))} or a scratchrnn.Activation.")
        self.nonlinearity = self.activation.name
        self.name = f"rnn_{self.nonlinearity}"
        built_in = self.activation is BUILT_IN.get(self.nonlinearity)
        self._c = self.nonlinearity in ("tanh", "relu") and built_in  # cells/elman.c
        self._c_options = built_in  # every built-in runs cells/options.c (with options, or the others)

    def pre_activation(self, x: Tensor, h_prev: Tensor, W_ih: Tensor, W_hh: Tensor,
                       b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
        """a = x W_ihᵀ + b_ih + b_hh + h_{t−1} W_hhᵀ for all rows at once (rows, H), recomputed for
        the backward of a nonlinearity whose derivative needs it."""
        a = x @ W_ih.t() if b_ih is None else torch.addmm(b_ih + b_hh, x, W_ih.t())
        return torch.addmm(a, h_prev, W_hh.t())

    def project(self, x, W_ih, b_ih, out):
        return out.addmm_(x, W_ih.t(), beta=0)  # xp = x W_ihᵀ, in the output buffer

    def step_constants(self, W_hh, b_ih, b_hh):
        return W_hh.t(), None if b_ih is None else b_ih + b_hh

    def step(self, xp_t, h_prev, constants, h_t):
        W_hh_T, bias = constants  # xp_t is h_t's storage (see project): the step runs in place
        a_t = xp_t if bias is None else xp_t.add_(bias)  # + b_ih + b_hh
        a_t.addmm_(h_prev, W_hh_T)  # a_t = x_t W_ihᵀ + b + h_{t-1} W_hhᵀ
        self.activation.apply_(a_t)  # h_t = tanh(a_t)

    def residuals(self, x, h_prev, out, W_ih, W_hh, b_ih, b_hh):
        if self.activation.from_output:
            return self.activation.fprime(None, out)  # f'(a_t) from h_t
        return self.activation.fprime(lambda: self.pre_activation(x, h_prev(), W_ih, W_hh, b_ih, b_hh), out)

    def step_backward(self, dh_t, residuals_t, h_prev):
        da_t = times_fprime(dh_t, residuals_t)  # da_t = dh_t ⊙ f'(a_t)
        return da_t, da_t, None

    def step_tangent(self, xp_dot_t, hp_dot_t, h_dot_prev, residuals_t, h_prev):
        return times_fprime(xp_dot_t + hp_dot_t, residuals_t)  # ḣ_t = f'(a_t) ⊙ (ẋp_t + ḣp_t)

    def accel_ready(self, *tensors):
        # tanh and relu run cells/elman.c; the other built-ins cells/options.c without options; a
        # user's Activation the PyTorch loop.
        return self._c_options and accel.available_for(*tensors)

    def forward_accel(self, xp, h0, W_hh, b_ih, b_hh, batch_sizes, out, h_n, reverse, *aux):
        bias = None if b_ih is None else b_ih + b_hh
        if self._c:
            accel.forward_steps(out, h0, W_hh, bias, batch_sizes, h_n, self.nonlinearity == "relu", reverse)
        else:
            accel.options_forward_steps(out, h0, W_hh, bias, None, None, None, batch_sizes, h_n,
                                        self.nonlinearity, reverse)

    def backward_accel(self, dh, x, h0, h_prev, out, W_ih, W_hh, b_ih, b_hh, batch_sizes, dh0, reverse,
                       *aux):
        if self._c:
            accel.backward_steps(dh, out, W_hh, batch_sizes, dh0, self.nonlinearity == "relu", reverse)
        else:  # f'(a_t) recomputed row by row in C from a_t (two GEMMs here, for all rows at once)
            a = self.pre_activation(x, h_prev(), W_ih, W_hh, b_ih, b_hh)
            accel.options_backward_steps(dh, out, W_hh, a, None, None, None, None, batch_sizes, dh0,
                                         self.nonlinearity, reverse)
        return dh, dh  # dh turned into da in place
