r"""The GRU cell, ``gru``: torch.nn.GRU's equations, the reset gate applied after the recurrent
product (gates in r, z, n order along the G·H = 3H rows of the weights).

Forward, one step (rows are batch elements):

    xp_t = x_t W_ihᵀ + b_ih                     (b, 3H): before the loop, for all steps
    hp_t = h_{t−1} W_hhᵀ + b_hh                 (b, 3H): inside the loop
    r_t  = σ(xp_r + hp_r)                        reset gate
    z_t  = σ(xp_z + hp_z)                        update gate
    n_t  = tanh(xp_n + r_t ⊙ hp_n)               candidate
    h_t  = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}

Backward, given dh_t (the total ∂L/∂h_t):

    dn    = dh_t ⊙ (1 − z_t)
    dz    = dh_t ⊙ (h_{t−1} − n_t)
    da_n  = dn ⊙ (1 − n_t²)
    da_r  = (da_n ⊙ hp_n) ⊙ r_t (1 − r_t)
    da_z  = dz ⊙ z_t (1 − z_t)
    dxp_t = [da_r, da_z, da_n]        dhp_t = [da_r, da_z, da_n ⊙ r_t]
    dh_{t−1} = dh_t ⊙ z_t + dhp_t W_hh                   (the stack adds dhp_t W_hh)

Tangent (ẋp_t, ḣp_t the tangents of xp_t and hp_t):

    ṙ = r(1 − r) ⊙ (ẋp_r + ḣp_r)     ż = z(1 − z) ⊙ (ẋp_z + ḣp_z)
    ṅ = (1 − n²) ⊙ (ẋp_n + ṙ ⊙ hp_n + r ⊙ ḣp_n)
    ḣ_t = (1 − z) ⊙ ṅ + ż ⊙ (h_{t−1} − n) + z ⊙ ḣ_{t−1}

What the backward reads, per row: [r, z, n, hp_n] (rows, 4H), recomputed from x and h_{t−1} by two
GEMMs over all steps at once (no step waits for another), so the forward saves nothing per step.
The C backward (:meth:`GRU.backward_accel`) keeps only the two GEMMs' results xp and hp (rows, 3H
each), recomputes the gates from them row by row and writes dxp and dhp in their place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scratchrnn.core import accel
from scratchrnn.core.cells.base import Cell

__all__ = ["GRU"]


def _gates(xp: Tensor, hp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(r, z, n) from xp and hp (b, 3H)."""
    xp_r, xp_z, xp_n = xp.chunk(3, 1)
    hp_r, hp_z, hp_n = hp.chunk(3, 1)
    r = torch.sigmoid(xp_r + hp_r)  # r_t = σ(xp_r + hp_r)
    z = torch.sigmoid(xp_z + hp_z)  # z_t = σ(xp_z + hp_z)
    n = torch.tanh(xp_n + r * hp_n)  # n_t = tanh(xp_n + r_t ⊙ hp_n)
    return r, z, n


def _recurrent(h_prev: Tensor, W_hh_T: Tensor, b_hh: Tensor | None) -> Tensor:
    """hp = h_{t−1} W_hhᵀ + b_hh."""
    return h_prev @ W_hh_T if b_hh is None else torch.addmm(b_hh, h_prev, W_hh_T)


def _recurrent_rows(h_prev, out: Tensor, h0: Tensor, W_hh: Tensor, b_hh: Tensor | None,
                    batch_sizes, reverse: bool) -> Tensor:
    """hp = h_{t−1} W_hhᵀ + b_hh of every row (rows, 3H), contiguous. Padded input: h_{t−1} read
    as views of out and h0 (two GEMMs into the rows of one buffer), never gathered into a copy."""
    N, T = batch_sizes[0], len(batch_sizes)
    if N == 0 or batch_sizes[-1] != N:  # packed (the sizes never grow): h_prev() gathers the rows
        return _recurrent(h_prev(), W_hh.t(), b_hh).contiguous()
    rows = N * T
    hp = out.new_empty(rows, W_hh.shape[0])
    if reverse:  # the rows starting from h0, the rows carried on, the rows they carry on from
        from_h0, carried, prev = slice(rows - N, rows), slice(0, rows - N), slice(N, rows)
    else:
        from_h0, carried, prev = slice(0, N), slice(N, rows), slice(0, rows - N)
    for rows_hp, h in ((from_h0, h0), (carried, out[prev])):
        if b_hh is None:
            torch.mm(h, W_hh.t(), out=hp[rows_hp])
        else:
            torch.addmm(b_hh, h, W_hh.t(), out=hp[rows_hp])
    return hp


class GRU(Cell):
    """h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}, torch.nn.GRU's cell: see the module docstring."""

    name = "gru"
    gates = 3

    def step(self, xp_t, h_prev, constants, h_t):
        W_hh_T, b_hh = constants
        _, z, n = _gates(xp_t, _recurrent(h_prev, W_hh_T, b_hh))
        h_t.copy_((1 - z) * n + z * h_prev)  # h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}

    def residuals(self, x, h_prev, out, W_ih, W_hh, b_ih, b_hh):
        hp = _recurrent(h_prev(), W_hh.t(), b_hh)  # (rows, 3H)
        r, z, n = _gates(self.project(x, W_ih, b_ih, out), hp)
        return torch.cat([r, z, n, hp[:, 2 * hp.shape[1] // 3 :]], 1)  # (rows, 4H): [r, z, n, hp_n]

    def step_backward(self, dh_t, residuals_t, h_prev):
        r, z, n, hp_n = residuals_t.chunk(4, 1)
        dn = dh_t * (1 - z)  # dn = dh ⊙ (1 − z)
        dz = dh_t * (h_prev - n)  # dz = dh ⊙ (h_{t−1} − n)
        da_n = dn * (1 - n * n)  # da_n = dn ⊙ (1 − n²)
        da_r = (da_n * hp_n) * (r * (1 - r))  # da_r = (da_n ⊙ hp_n) ⊙ r(1 − r)
        da_z = dz * (z * (1 - z))  # da_z = dz ⊙ z(1 − z)
        dxp_t = torch.cat([da_r, da_z, da_n], 1)  # dxp_t = [da_r, da_z, da_n]
        dhp_t = torch.cat([da_r, da_z, da_n * r], 1)  # dhp_t = [da_r, da_z, da_n ⊙ r]
        return dxp_t, dhp_t, dh_t * z  # dh_{t−1} = dh ⊙ z + dhp_t W_hh

    def step_tangent(self, xp_dot_t, hp_dot_t, h_dot_prev, residuals_t, h_prev):
        r, z, n, hp_n = residuals_t.chunk(4, 1)
        xp_dot_r, xp_dot_z, xp_dot_n = xp_dot_t.chunk(3, 1)
        hp_dot_r, hp_dot_z, hp_dot_n = hp_dot_t.chunk(3, 1)
        r_dot = r * (1 - r) * (xp_dot_r + hp_dot_r)  # ṙ = r(1 − r) ⊙ (ẋp_r + ḣp_r)
        z_dot = z * (1 - z) * (xp_dot_z + hp_dot_z)  # ż = z(1 − z) ⊙ (ẋp_z + ḣp_z)
        n_dot = (1 - n * n) * (xp_dot_n + r_dot * hp_n + r * hp_dot_n)  # ṅ
        return (1 - z) * n_dot + z_dot * (h_prev - n) + z * h_dot_prev  # ḣ_t

    def accel_ready(self, *tensors):
        # Where the library has the GRU's C steps (cells/gru.c through accel), else the PyTorch loop.
        return hasattr(accel, "gru_forward_steps") and accel.available_for(*tensors)

    def forward_accel(self, xp, h0, W_hh, b_ih, b_hh, batch_sizes, out, h_n, reverse, *aux):
        b_hh = None if b_hh is None else b_hh.contiguous()
        # Nothing saved: the backward recomputes the gates.
        accel.gru_forward_steps(xp.contiguous(), h0, W_hh.contiguous(), b_hh, batch_sizes, out, h_n, reverse)

    def backward_accel(self, dh, x, h0, h_prev, out, W_ih, W_hh, b_ih, b_hh, batch_sizes, dh0, reverse,
                       *aux):
        # xp and hp of every row by two GEMMs; the C loop recomputes the gates from them row by row
        # and writes dxp and dhp in their place: no ws, no buffers of their own (rows x 6H in all).
        dxp = self.project(x, W_ih, b_ih, out).contiguous()  # (rows, 3H): xp, then dxp
        dhp = _recurrent_rows(h_prev, out, h0, W_hh, b_hh, batch_sizes, reverse)  # hp, then dhp
        accel.gru_backward_recompute_steps(dh, out, h0, W_hh.contiguous(), dxp, dhp, batch_sizes, dh0,
                                           reverse)
        return dxp, dhp
