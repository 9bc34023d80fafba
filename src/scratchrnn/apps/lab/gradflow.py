"""gradflow: how ∂L/∂h_t shrinks (or not) on its way back through time, per initialisation.

The tutorial says the ×0.01 init keeps gradients from exploding. This experiment shows what it does
to gradients travelling back through time: a loss that depends on the last state h_T only, and the
norm of ∂L/∂h_t for t = T … 1 under each scheme of :mod:`scratchrnn.core.init`, next to the spectral
radius ρ(W_hh) that predicts the decay rate. By the BPTT recurrence of :mod:`scratchrnn.core.functional`,

    dh_{t-1} = ((dh_t) ⊙ (1 − h_t²)) W_hh

so each step back multiplies the gradient by W_hh (and by tanh' ≤ 1): with ρ(W_hh) ≈ 0.01·√H it
shrinks by about that factor every step.

How ∂L/∂h_t is obtained: with our hand-written backward, not autograd's. The RNN runs one step per
call (``scratchrnn.RNN`` on a length-1 slice, the state passed from call to call), each call is one
autograd node whose backward is ``scratchrnn.core.functional.rnn_backward``, and ``retain_grad`` on each h_t
keeps the dh it hands to the step before. The chained result at t = 0 is checked against ∂L/∂h_0 of
a single full-length call (our BPTT over all T steps) and of autograd on the tutorial's loop
(``scratchrnn.core.reference.time_major_rnn``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from scratchrnn.apps.bench.harness import fmt, md_table
from scratchrnn.apps.lab._common import CASES, LabResult, finish, new_figure, prepare_out, save
from scratchrnn.core.init import init_rnn_
from scratchrnn.core.modules import RNN
from scratchrnn.core.reference import time_major_rnn, tutorial_weights


def spectral_radius(W: torch.Tensor) -> float:
    """ρ(W) = max |λ| over the eigenvalues of the square matrix W."""
    return torch.linalg.eigvals(W.double()).abs().max().item()


def _row_norms(g: torch.Tensor) -> torch.Tensor:
    """‖g[n]‖ per row, scaled first: squaring 1e-189 would underflow even float64."""
    scale = g.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(g.dtype).tiny)
    return (g / scale).norm(dim=1) * scale[:, 0]


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / max |b|: the error relative to the size of the gradient."""
    return ((a - b).abs().max() / b.abs().max()).item()


def gradient_norms(rnn: RNN, x: torch.Tensor, u: torch.Tensor) -> tuple[np.ndarray, dict]:
    """‖∂L/∂h_t‖ for t = 0 … T, L = Σ_n u · h_T[n], through our hand-written BPTT.

    Args:
        rnn: a 1-layer scratchrnn.RNN. x: (T, N, D) input. u: (H,) the loss's direction.

    Returns:
        norms (T + 1,): the mean over the batch of each sequence's ‖∂L/∂h_t‖ (t = 0 is h_0); and
        the mean of f'(a_t) (1 − h_t² for tanh, [h_t > 0] for ReLU) over all steps, and
        the checks: max |difference| / max |value| between the chained ∂L/∂h_0 and that of one
        full-length call of our RNN, and of autograd on the reference loop.
    """
    T, N = x.shape[0], x.shape[1]
    H = rnn.hidden_size
    h0 = x.new_zeros(1, N, H, requires_grad=True)
    states = [h0]
    h = h0
    for t in range(T):
        _, h = rnn(x[t : t + 1], h)  # one step: a_t = x_t W_ihᵀ + b + h_{t-1} W_hhᵀ, h_t = f(a_t)
        h.retain_grad()  # keep the dh_t our backward computes for this step
        states.append(h)
    hs = torch.cat(states[1:]).detach()  # (T, N, H)
    slope = (1 - hs.square()) if rnn.nonlinearity == "tanh" else (hs > 0).to(hs.dtype)
    loss = (h[0] @ u).sum()
    loss.backward()
    norms = np.array([_row_norms(s.grad[0]).mean().item() for s in states])

    # Checks: ∂L/∂h_0 from one call over all T steps (our BPTT), and from autograd (reference loop).
    h0_full = h0.detach().clone().requires_grad_(True)
    _, h_n = rnn(x, h0_full)
    (h_n[0] @ u).sum().backward()
    h0_ref = h0.detach().clone().requires_grad_(True)
    _, h_n_ref = time_major_rnn(x, h0_ref, tutorial_weights(rnn), rnn.nonlinearity)
    (h_n_ref[0] @ u).sum().backward()
    rnn.zero_grad(set_to_none=True)
    checks = {
        "mean_activation_slope": slope.mean().item(),
        "dh0_rel_diff_full_call": _rel_diff(h0.grad, h0_full.grad),
        "dh0_rel_diff_autograd_reference": _rel_diff(h0.grad, h0_ref.grad),
    }
    return norms, checks


def measure(T: int, N: int, D: int, H: int, seed: int) -> tuple[dict, dict, dict]:
    """Per init of :data:`CASES`: the numbers, the curve ‖∂L/∂h_t‖ (t = 0 … T), W_hh's eigenvalues."""
    dtype = torch.float64  # the ×0.01 gradients fall below float32's smallest number (~1e-38)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, N, D, generator=gen, dtype=dtype)
    u = torch.randn(H, generator=gen, dtype=dtype)
    u /= u.norm()  # ∂L/∂h_T = u for every sequence: norm 1 at t = T
    cases, curves, eigs = {}, {}, {}
    for label, scheme, nonlinearity in CASES:
        torch.manual_seed(seed)
        rnn = init_rnn_(RNN(D, H, nonlinearity=nonlinearity, dtype=dtype), scheme)
        norms, checks = gradient_norms(rnn, x, u)
        # The per-step factor: the geometric mean of ‖dh_{t-1}‖ / ‖dh_t‖ over all T steps.
        per_step = (norms[1] / norms[T]) ** (1.0 / (T - 1)) if norms[1] > 0 else 0.0
        cases[label] = {
            "scheme": scheme,
            "nonlinearity": nonlinearity,
            "spectral_radius": spectral_radius(rnn.weight_hh_l0.detach()),
            "norm_at_T": float(norms[T]),
            "norm_at_mid": float(norms[T // 2]),
            "norm_at_1": float(norms[1]),
            "per_step_factor": per_step,
            **checks,
        }
        curves[label] = norms
        eigs[label] = torch.linalg.eigvals(rnn.weight_hh_l0.detach()).numpy()
    return cases, curves, eigs


def plot(numbers: dict, curves: dict, eigs: dict, out: Path) -> Path:
    """‖∂L/∂h_t‖ against t per init, and W_hh's eigenvalues against the unit circle."""
    T, H = numbers["T"], numbers["H"]
    fig, (ax, ax_eig) = new_figure(2)
    t = np.arange(T + 1)
    for label, norms in curves.items():
        ax.semilogy(t[1:], np.where(norms[1:] > 0, norms[1:], np.nan), label=label)
    ax.set_title(f"Gradient flowing back through time (T = {T}, H = {H}, float64)")
    ax.set_xlabel("time step t  (the gradient travels from t = T leftwards)")
    ax.set_ylabel("‖∂L/∂h_t‖  (L depends on h_T only; ‖∂L/∂h_T‖ = 1)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    circle = np.exp(1j * np.linspace(0, 2 * math.pi, 400))
    ax_eig.plot(circle.real, circle.imag, "k--", lw=0.8, label="|λ| = 1")
    for (label, ev), marker in zip(eigs.items(), "o^sDv", strict=True):
        rho = numbers["cases"][label]["spectral_radius"]
        ax_eig.scatter(ev.real, ev.imag, s=9, marker=marker, alpha=0.6, label=f"{label}: ρ = {rho:.3g}")
    ax_eig.set_title("Eigenvalues λ of W_hh (spectral radius ρ = max |λ|)")
    ax_eig.set_xlabel("Re λ")
    ax_eig.set_ylabel("Im λ")
    ax_eig.set_aspect("equal")
    ax_eig.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return save(fig, out / "gradflow.png")


def summarise(numbers: dict) -> str:
    """The markdown summary: the setting, the table per init, the ×0.01 / default ratio."""
    T, N, D, H = (numbers[k] for k in ("T", "N", "D", "H"))
    rows = [
        (label, rho, slope, rho * slope, c["per_step_factor"], c["norm_at_mid"], c["norm_at_1"])
        for label, c in numbers["cases"].items()
        for rho, slope in [(c["spectral_radius"], c["mean_activation_slope"])]
    ]
    header = ["init", "ρ(W_hh)", "mean f'(a_t)", "ρ × mean f'", "factor per step"]
    header += [f"‖∂L/∂h_{{{T // 2}}}‖", "‖∂L/∂h_1‖"]
    return "\n".join(
        [
            "# gradflow: ‖∂L/∂h_t‖ back through time, per initialisation",
            "",
            f"One tanh (IRNN: ReLU) layer, T = {T}, N = {N}, D = {D}, H = {H}, float64, inputs "
            f"N(0, 1), L = Σ_n u·h_T (‖u‖ = 1, so ‖∂L/∂h_T‖ = 1). Gradients from our hand-written "
            "BPTT, one step per call with retain_grad; the chained ∂L/∂h_0 matches one full-length "
            "call and autograd on the reference loop to a relative "
            f"{fmt(numbers['worst_dh0_check'])} at worst.",
            "",
            md_table(header, rows),
            "",
            "Each step back multiplies dh by diag(f'(a_t)) W_hh (f' = 1 − h² for tanh, [h > 0] "
            "for ReLU). The factor per step is the geometric mean of ‖dh_{t-1}‖/‖dh_t‖ over the T "
            "steps; for tanh it is close to ρ(W_hh) × mean f'(a_t). For the IRNN it is higher than "
            "that product: with W_hh = I the gradient passes unchanged through the units that stay "
            "on.",
            "",
            f"At t = 1 the ×0.01 init's gradient is {fmt(numbers['small_over_default_at_1'])} times "
            "PyTorch default's.",
            "",
            "![gradflow](gradflow.png)",
        ]
    )


def run(out: str | Path, quick: bool = False, seed: int = 0) -> LabResult:
    """Measure ‖∂L/∂h_t‖ for every init in :data:`CASES`; write the plot and summary to ``out``."""
    out = prepare_out(out)
    T, N, D, H = (100, 8, 8, 32) if quick else (200, 32, 16, 128)
    cases, curves, eigs = measure(T, N, D, H, seed)
    small, default = cases[CASES[0][0]], cases[CASES[1][0]]
    worst_check = max(
        max(c["dh0_rel_diff_full_call"], c["dh0_rel_diff_autograd_reference"]) for c in cases.values()
    )
    numbers = {"T": T, "N": N, "D": D, "H": H, "cases": cases,
               "small_over_default_at_1": small["norm_at_1"] / default["norm_at_1"],
               "worst_dh0_check": worst_check}
    return finish("gradflow", out, numbers, summarise(numbers), [plot(numbers, curves, eigs, out)])
