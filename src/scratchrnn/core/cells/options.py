r"""Cell options (issue 19): layer normalisation, recurrent dropout and zoneout, as a cell wrapping
a registered one; registered as ``<cell>+ln``, ``+rd``, ``+zo`` (in that order when combined).

Layer norm and recurrent dropout change the Elman cell's summed input, so they take an Elman cell
(any nonlinearity); zoneout takes any cell. With m the recurrent-dropout mask (N, H) of the call (0
or 1/(1 − p), the same at every step) and z_t the zoneout mask (b, H) of the step (1 with
probability p in training; p itself in eval, which makes the step the expectation):

    a_t  = xp_t + b_ih + b_hh + (h_{t−1} ⊙ m) W_hhᵀ               (m = 1 without recurrent dropout)
    â_t  = γ ⊙ (a_t − μ_t) / √(σ_t² + ε) + β                       (layer norm; ε = 1e-5;
                                                                    μ_t, σ_t² over the H units)
    h̃_t  = f(â_t)                                                  (the base cell's step, for a GRU)
    h_t  = z_t ⊙ h_{t−1} + (1 − z_t) ⊙ h̃_t                         (zoneout)

Backward, given dh_t (the total ∂L/∂h_t), with n̂_t = (a_t − μ_t)/s_t, s_t = √(σ_t² + ε):

    dh̃   = dh_t ⊙ (1 − z_t);     dh_{t−1} += dh_t ⊙ z_t            (zoneout: the direct path)
    dâ   = dh̃ ⊙ f'(â_t)
    g    = γ ⊙ dâ;   da_t = (g − mean(g) − n̂_t ⊙ mean(g ⊙ n̂_t)) / s_t        (means over H)
    dγ  = Σ_t dâ ⊙ n̂_t;   dβ = Σ_t dâ                             (summed by the stack)
    dxp_t = dhp_t = da_t;  dh_{t−1} += (dhp_t W_hh) ⊙ m;   dW_hh = Σ_t dhp_tᵀ (h_{t−1} ⊙ m)

The masks come in with the call (drawn by the module from torch's generator, outside the
operator); the cell puts them beside xp (forward) and the residuals (backward), so that the stack
hands each step its rows of them. What the backward reads per row: [f'(â), n̂, 1/s, γ | m | z];
all recomputed from x and h_{t−1} after the forward (two GEMMs over all steps), nothing saved.

The C loop (``cells/options.c`` through :mod:`~scratchrnn.core.accel`) runs layer norm and zoneout
on the Elman cell with any built-in nonlinearity (tanh, relu, sigmoid, softsign, leaky_relu,
silu, gelu; CPU, float32 or float64), and those but tanh and relu without options too: the forward
is the Elman cell's fused step (x W_ihᵀ in the output buffer, h_{t−1} W_hhᵀ added by the driver)
with the normalisation and the blend per row; the backward gets a_t for all
rows (the same two GEMMs) and recomputes n̂, 1/s, â and f'(â) from it row by row in C. Recurrent
dropout in training, zoneout on a GRU and a user's Activation run the PyTorch loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchrnn.core import accel
from scratchrnn.core.cells.base import Cell
from scratchrnn.core.cells.elman import Elman

__all__ = ["EPS", "Options"]

EPS = 1e-5


class Options(Cell):
    """``base`` with layer norm (``ln``), recurrent dropout (``rd``) and/or zoneout (``zo``): see
    the module docstring."""

    def __init__(self, base: Cell, ln: bool = False, rd: bool = False, zo: bool = False) -> None:
        elman = isinstance(base, Elman)
        for option, on in (("layer_norm", ln), ("recurrent_dropout", rd)):
            if on and not elman:
                raise ValueError(f"{option}: the {base.name!r} cell has no single summed input "
                                 f"(an Elman cell's a_t) to apply it to; expected an Elman cell")
        self.base, self.ln, self.rd, self.zo, self.elman = base, ln, rd, zo, elman
        self.name = base.name + "+ln" * ln + "+rd" * rd + "+zo" * zo
        self.gates = base.gates
        self.noise = ("sequence",) * rd + ("row",) * zo

    def extra_parameter_shapes(self, hidden_size):
        return {"ln_weight": (hidden_size,), "ln_bias": (hidden_size,)} if self.ln else {}

    def reset_extra_(self, weights):
        if self.ln:
            torch.nn.init.ones_(weights[0])
            torch.nn.init.zeros_(weights[1])

    # The recurrent product and its transposes are the base cell's (a GEMM, or e.g. IndRNN's u ⊙ h).
    def recurrent(self, h, W_hh):
        return self.base.recurrent(h, W_hh)

    def recurrent_backward(self, dhp, W_hh):
        return self.base.recurrent_backward(dhp, W_hh)

    def recurrent_weight_grad(self, dhp, h_prev, matmul=torch.mm):
        return self.base.recurrent_weight_grad(dhp, h_prev, matmul)

    # ----- forward ---------------------------------------------------------------------------

    def _unpack(self, aux: tuple) -> tuple:
        """(γ, β, m, z) from the call's aux: the extra parameters, then the masks (None if off)."""
        aux = list(aux)
        gamma, beta = (aux.pop(0), aux.pop(0)) if self.ln else (None, None)
        m = aux.pop(0) if self.rd else None
        z = aux.pop(0) if self.zo else None
        return gamma, beta, m, z

    def project(self, x, W_ih, b_ih, out, *aux):
        _, _, m, z = self._unpack(aux)
        # The Elman path writes x W_ihᵀ into the output buffer, as the Elman cell does (the C loop
        # forms a_t there in place) and adds b_ih with b_hh in the step; another base projects as it does.
        xp = out.addmm_(x, W_ih.t(), beta=0) if self.elman else \
            self.base.project(x, W_ih, b_ih, x.new_empty(x.shape[0], W_ih.shape[0] // self.gates))
        masks = [t for t in (m, z) if t is not None]
        return torch.cat([xp, *masks], 1) if masks else xp  # (rows, G·H [+ H] [+ H])

    def step_constants(self, W_hh, b_ih, b_hh, *aux):
        gamma, beta, _, _ = self._unpack(aux)
        if not self.elman:
            return self.base.step_constants(W_hh, b_ih, b_hh), W_hh.shape[0]
        return W_hh.t(), None if b_ih is None else b_ih + b_hh, gamma, beta

    def _columns(self, xp_t: Tensor, width: int) -> tuple:
        H = (xp_t.shape[1] - width) // (self.rd + self.zo) if self.rd or self.zo else 0
        m = xp_t[:, width : width + H] if self.rd else None
        z = xp_t[:, -H:] if self.zo else None
        return xp_t[:, :width], m, z

    def _summed(self, xp, h_prev, m, W_hh_T, bias, gamma, beta):
        """â (and n̂, 1/s for the backward) from xp = x W_ihᵀ and h_{t−1}."""
        a = xp if bias is None else xp + bias  # + b_ih + b_hh
        a = torch.addmm(a, h_prev if m is None else h_prev * m, W_hh_T)  # + (h_{t−1} ⊙ m) W_hhᵀ
        if gamma is None:
            return a, None, None
        mu = a.mean(1, keepdim=True)  # μ_t
        rstd = torch.rsqrt(a.var(1, unbiased=False, keepdim=True) + EPS)  # 1 / √(σ_t² + ε)
        n_hat = (a - mu) * rstd  # n̂_t
        return gamma * n_hat + beta, n_hat, rstd  # â_t = γ ⊙ n̂_t + β

    def step(self, xp_t, h_prev, constants, h_t):
        if not self.elman:
            base_constants, GH = constants
            xp_t, _, z = self._columns(xp_t, GH)
            self.base.step(xp_t, h_prev, base_constants, h_t)  # h̃_t
        else:
            W_hh_T, bias, gamma, beta = constants
            xp_t, m, z = self._columns(xp_t, W_hh_T.shape[1])
            a_hat, _, _ = self._summed(xp_t, h_prev, m, W_hh_T, bias, gamma, beta)
            h_t.copy_(self.base.activation(a_hat))  # h̃_t = f(â_t)
        if z is not None:
            h_t.copy_(z * h_prev + (1 - z) * h_t)  # h_t = z_t ⊙ h_{t−1} + (1 − z_t) ⊙ h̃_t

    # ----- backward --------------------------------------------------------------------------

    def residuals(self, x, h_prev, out, W_ih, W_hh, b_ih, b_hh, *aux):
        gamma, beta, m, z = self._unpack(aux)
        masks = [t for t in (m, z) if t is not None]
        if not self.elman:  # the base's residuals, from h̃ (the base's step over all rows at once)
            h_cand = torch.empty_like(out)
            xp = self.base.project(x, W_ih, b_ih, h_cand)
            self.base.step(xp, h_prev(), self.base.step_constants(W_hh, b_ih, b_hh), h_cand)
            return torch.cat([self.base.residuals(x, h_prev, h_cand, W_ih, W_hh, b_ih, b_hh), *masks], 1)
        bias = None if b_ih is None else b_ih + b_hh
        a_hat, n_hat, rstd = self._summed(x @ W_ih.t(), h_prev(), m, W_hh.t(), bias, gamma, beta)
        act = self.base.activation
        fprime = act.fprime(lambda: a_hat, act(a_hat) if act.from_output else None)  # f'(â_t)
        fprime = fprime.to(a_hat.dtype)  # relu's bool mask as 0/1: it sits in one float tensor
        ln = [n_hat, rstd, gamma.expand_as(n_hat)] if self.ln else []
        return torch.cat([fprime, *ln, *masks], 1)  # (rows, H [+ 2H + 1] [+ H] [+ H])

    def _split_residuals(self, res: Tensor, H: int) -> tuple:
        cols = [H] + ([H, 1, H] if self.ln else []) + [H] * (self.rd + self.zo)
        if not self.elman:  # [the base's residuals | z]
            cols = [res.shape[1] - H * self.zo] + [H] * self.zo
        parts = list(res.split(cols, 1))
        first = parts.pop(0)
        n_hat, rstd, gamma = (parts.pop(0), parts.pop(0), parts.pop(0)) if self.ln else (None,) * 3
        m = parts.pop(0) if self.rd else None
        z = parts.pop(0) if self.zo else None
        return first, n_hat, rstd, gamma, m, z

    def recurrent_mask(self, residuals):
        if not self.rd:
            return None
        H = (residuals.shape[1] - self.ln) // (1 + 2 * self.ln + self.rd + self.zo)  # see residuals
        return self._split_residuals(residuals, H)[4]

    def step_backward(self, dh_t, residuals_t, h_prev):
        first, n_hat, rstd, gamma, _, z = self._split_residuals(residuals_t, dh_t.shape[1])
        dh_cand = dh_t if z is None else dh_t * (1 - z)  # dh̃ = dh ⊙ (1 − z)
        dh_direct = None if z is None else dh_t * z  # dh_{t−1} += dh ⊙ z
        if not self.elman:
            dxp_t, dhp_t, base_direct, *_ = self.base.step_backward(dh_cand, first, h_prev)
            if base_direct is not None:
                dh_direct = base_direct if dh_direct is None else dh_direct + base_direct
            return dxp_t, dhp_t, dh_direct
        da_hat = dh_cand * first  # dâ = dh̃ ⊙ f'(â)
        if not self.ln:
            return da_hat, da_hat, dh_direct
        g = gamma * da_hat  # g = γ ⊙ dâ
        da = (g - g.mean(1, keepdim=True) - n_hat * (g * n_hat).mean(1, keepdim=True)) * rstd  # da_t
        return da, da, dh_direct, torch.cat([da_hat * n_hat, da_hat], 1)  # per row: dγ, dβ

    def step_tangent(self, xp_dot_t, hp_dot_t, h_dot_prev, residuals_t, h_prev, gamma_dot=None,
                     beta_dot=None):
        r"""ḣ_t from ẋp_t = ẋ_t W_ihᵀ + x_t Ẇ_ihᵀ + ḃ_ih, ḣp_t = (ḣ_{t−1} ⊙ m) W_hhᵀ +
        (h_{t−1} ⊙ m) Ẇ_hhᵀ + ḃ_hh (the stack masks both by :meth:`recurrent_mask`), ḣ_{t−1}, and
        γ̇, β̇ (layer norm's parameters' tangents, None where zero; the masks are constants):

            ȧ_t  = ẋp_t + ḣp_t
            ṅ_t  = (ȧ_t − mean(ȧ_t) − n̂_t ⊙ mean(ȧ_t ⊙ n̂_t)) / s_t      (layer norm; means over H)
            â̇_t  = γ ⊙ ṅ_t + γ̇ ⊙ n̂_t + β̇                                (layer norm; else â̇_t = ȧ_t)
            ḣ̃_t  = f'(â_t) ⊙ â̇_t                                       (the base's step tangent, for a GRU)
            ḣ_t  = z_t ⊙ ḣ_{t−1} + (1 − z_t) ⊙ ḣ̃_t                      (zoneout)
        """
        first, n_hat, rstd, gamma, _, z = self._split_residuals(residuals_t, h_dot_prev.shape[1])
        if not self.elman:
            h_dot_cand = self.base.step_tangent(xp_dot_t, hp_dot_t, h_dot_prev, first, h_prev)
        else:
            a_dot = xp_dot_t + hp_dot_t  # ȧ_t = ẋp_t + ḣp_t
            a_hat_dot = a_dot
            if self.ln:
                n_dot = (a_dot - a_dot.mean(1, keepdim=True)
                         - n_hat * (a_dot * n_hat).mean(1, keepdim=True)) * rstd  # ṅ_t
                a_hat_dot = gamma * n_dot  # â̇_t = γ ⊙ ṅ_t
                if gamma_dot is not None:
                    a_hat_dot = a_hat_dot + gamma_dot * n_hat  # + γ̇ ⊙ n̂_t
                if beta_dot is not None:
                    a_hat_dot = a_hat_dot + beta_dot  # + β̇
            h_dot_cand = first * a_hat_dot  # ḣ̃_t = f'(â_t) ⊙ â̇_t
        if z is None:
            return h_dot_cand
        return z * h_dot_prev + (1 - z) * h_dot_cand  # ḣ_t = z ⊙ ḣ_{t−1} + (1 − z) ⊙ ḣ̃_t

    # ----- the loop in C (cells/options.c): layer norm and zoneout on the Elman cell, any built-in f

    def accel_ready(self, *tensors):
        # Recurrent dropout (and a GRU base, or a user's Activation) runs the PyTorch loop.
        return self.elman and self.base._c_options and not self.rd and accel.available_for(*tensors)

    def forward_accel(self, xp, h0, W_hh, b_ih, b_hh, batch_sizes, out, h_n, reverse, *aux):
        gamma, beta, _, z = self._unpack(aux)  # out holds x W_ihᵀ (see project)
        bias = None if b_ih is None else b_ih + b_hh
        accel.options_forward_steps(out, h0, W_hh, bias, gamma, beta, None if z is None else z.contiguous(),
                                    batch_sizes, h_n, self.base.nonlinearity, reverse)

    def backward_accel(self, dh, x, h0, h_prev, out, W_ih, W_hh, b_ih, b_hh, batch_sizes, dh0, reverse,
                       *aux):
        gamma, beta, _, z = self._unpack(aux)
        # a_t for all rows at once (two GEMMs); the C loop recomputes n̂, â and f'(â) from it per row.
        a = self.base.pre_activation(x, h_prev(), W_ih, W_hh, b_ih, b_hh)  # (rows, H)
        dextra = dh.new_empty(dh.shape[0], 2 * dh.shape[1]) if self.ln else None  # rows of [dγ | dβ]
        accel.options_backward_steps(dh, out, W_hh, a, gamma, beta, None if z is None else z.contiguous(),
                                     dextra, batch_sizes, dh0, self.base.nonlinearity, reverse)
        return (dh, dh) if dextra is None else (dh, dh, dextra)  # dh turned into da in place
