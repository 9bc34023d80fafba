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

The GRU, one row beside PyTorch's default init: the same measurement on a GRU layer (nn.GRU's
equations and init, same H, inputs and loss). Its BPTT has a path that the Elman cell lacks,

    dh_{t-1} = dh_t ⊙ z_t + (the gates' terms, through W_hh)

through the update gate z_t: no W_hh and no tanh′ on it, so where z_t ≈ 1 the gradient passes back
almost unchanged. Measured through our hand-written BPTT when this build has scratchrnn.GRU
(apps/ours.py), else through nn.GRU (autograd), which the summary names; the chained ∂L/∂h_0 is
checked against one full-length call, and ours against nn.GRU's.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from scratchrnn.apps.bench.harness import fmt, md_table
from scratchrnn.apps.lab._common import CASES, LabResult, finish, new_figure, prepare_out, save
from scratchrnn.apps.ours import gru_class
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


def _chained(module: torch.nn.Module, x: torch.Tensor, u: torch.Tensor) -> tuple[np.ndarray, list]:
    """‖∂L/∂h_t‖ (t = 0 … T, mean over the batch), L = Σ_n u · h_T[n], one step per call of
    ``module`` (an RNN or a GRU, one layer), and the states h_0 … h_T (their .grad is ∂L/∂h_t)."""
    N, H = x.shape[1], module.hidden_size
    h0 = x.new_zeros(1, N, H, requires_grad=True)
    states, h = [h0], h0
    for t in range(x.shape[0]):
        _, h = module(x[t : t + 1], h)  # one step: one call, one node of the module's backward
        h.retain_grad()  # keep the dh_t the backward computes for this step
        states.append(h)
    (h[0] @ u).sum().backward()
    return np.array([_row_norms(s.grad[0]).mean().item() for s in states]), states


def _dh0_full_call(module: torch.nn.Module, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """∂L/∂h_0 from one call of ``module`` over all T steps."""
    h0 = x.new_zeros(1, x.shape[1], module.hidden_size, requires_grad=True)
    _, h_n = module(x, h0)
    (h_n[0] @ u).sum().backward()
    module.zero_grad(set_to_none=True)
    return h0.grad


def gru_gradient_norms(D: int, H: int, x: torch.Tensor, u: torch.Tensor, seed: int, z_bias: float = 0.0
                       ) -> tuple[np.ndarray, dict]:
    """‖∂L/∂h_t‖ (t = 0 … T) through a one-layer GRU with PyTorch's default init (plus ``z_bias``
    on the update gate's b_hz, which opens it: z_t → 1 keeps h_{t-1}), as :func:`gradient_norms`
    does for the RNN; and the mean update gate z_t over all steps, which the path
    dh_{t-1} ∋ dh_t ⊙ z_t multiplies by. Through scratchrnn.GRU where built, else nn.GRU."""
    torch.manual_seed(seed)
    reference = torch.nn.GRU(D, H, dtype=x.dtype)
    with torch.no_grad():
        reference.bias_hh_l0[H : 2 * H] += z_bias
    ours = gru_class()
    module = reference
    if ours is not None:
        module = ours(D, H, dtype=x.dtype)
        module.load_state_dict(reference.state_dict())
    norms, states = _chained(module, x, u)
    h_prev = torch.cat(states[:-1]).detach()  # (T, N, H): h_{t-1} of every step
    W_iz, W_hz = (w.detach()[H : 2 * H] for w in (module.weight_ih_l0, module.weight_hh_l0))
    b_z = (module.bias_ih_l0 + module.bias_hh_l0).detach()[H : 2 * H]
    z = torch.sigmoid(x @ W_iz.t() + h_prev @ W_hz.t() + b_z)  # nn.GRU's update gate, every step
    module.zero_grad(set_to_none=True)
    dh0 = states[0].grad
    checks = {
        "implementation": "scratchrnn.GRU" if ours is not None else "nn.GRU",
        "mean_update_gate": z.mean().item(),
        "dh0_rel_diff_full_call": _rel_diff(dh0, _dh0_full_call(module, x, u)),
        "dh0_rel_diff_nn_gru": _rel_diff(dh0, _dh0_full_call(reference, x, u)),
    }
    return norms, checks


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


GRU_LABEL = "GRU (PyTorch default)"
GRU_Z_BIAS = 3.0  # b_hz + 3: σ(3) ≈ 0.95, an update gate that mostly keeps h_{t-1}
GRU_OPEN_LABEL = f"GRU, update-gate bias +{GRU_Z_BIAS:g}"


def measure(T: int, N: int, D: int, H: int, seed: int) -> tuple[dict, dict, dict, dict]:
    """Per init of :data:`CASES`: the numbers, the curve ‖∂L/∂h_t‖ (t = 0 … T), W_hh's eigenvalues;
    then the GRU's numbers (its curve joins the others under :data:`GRU_LABEL`)."""
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
    gru = {}
    for key, label, z_bias in (("default", GRU_LABEL, 0.0), ("open", GRU_OPEN_LABEL, GRU_Z_BIAS)):
        norms, checks = gru_gradient_norms(D, H, x, u, seed, z_bias)
        curves[label] = norms
        gru[key] = {
            "label": label,
            "z_bias": z_bias,
            "norm_at_T": float(norms[T]),
            "norm_at_mid": float(norms[T // 2]),
            "norm_at_1": float(norms[1]),
            "per_step_factor": (norms[1] / norms[T]) ** (1.0 / (T - 1)) if norms[1] > 0 else 0.0,
            **checks,
        }
    return cases, curves, eigs, gru


def plot(numbers: dict, curves: dict, eigs: dict, out: Path) -> Path:
    """‖∂L/∂h_t‖ against t per init, and W_hh's eigenvalues against the unit circle."""
    T, H = numbers["T"], numbers["H"]
    fig, (ax, ax_eig) = new_figure(2)
    t = np.arange(T + 1)
    for label, norms in curves.items():
        style = {"color": "black", "linestyle": {GRU_LABEL: "--", GRU_OPEN_LABEL: ":"}[label]} if (
            label in (GRU_LABEL, GRU_OPEN_LABEL)) else {}
        ax.semilogy(t[1:], np.where(norms[1:] > 0, norms[1:], np.nan), label=label, **style)
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
            *_gru_summary(numbers),
            "",
            "![gradflow](gradflow.png)",
        ]
    )


def _gru_summary(numbers: dict) -> list[str]:
    """The GRU's paragraph and table: its curve against the Elman cell's with the same init."""
    T, gru, elman = numbers["T"], numbers["gru"], numbers["cases"][CASES[1][0]]
    rows = [("Elman RNN, PyTorch default", "–", elman["per_step_factor"], elman["norm_at_mid"],
             elman["norm_at_1"])]
    rows += [(g["label"], g["mean_update_gate"], g["per_step_factor"], g["norm_at_mid"], g["norm_at_1"])
             for g in gru.values()]
    header = ["cell", "mean z_t", "factor per step", f"‖∂L/∂h_{{{T // 2}}}‖", "‖∂L/∂h_1‖"]
    worst = max(max(g["dh0_rel_diff_full_call"], g["dh0_rel_diff_nn_gru"]) for g in gru.values())
    return [
        "## The GRU",
        "",
        f"A GRU layer with the same H, inputs and loss, PyTorch's default init, and again with "
        f"+{GRU_Z_BIAS:g} on the update gate's bias b_hz, through {gru['default']['implementation']} "
        f"(the chained ∂L/∂h_0 matches one full-length call and nn.GRU's to a relative {fmt(worst)} "
        "at worst). Its BPTT passes dh_t ⊙ z_t straight back to h_{t-1}, with no W_hh and no tanh′ "
        "on that path; z_t is the update gate, which training can open or close per unit.",
        "",
        md_table(header, rows),
        "",
        f"At t = 1 the GRU's gradient is {fmt(numbers['gru_over_elman_at_1'])} times the Elman "
        f"cell's with PyTorch's default init, and {fmt(numbers['open_gru_over_elman_at_1'])} times "
        "with the update gate opened.",
    ]


def run(out: str | Path, quick: bool = False, seed: int = 0) -> LabResult:
    """Measure ‖∂L/∂h_t‖ for every init in :data:`CASES`; write the plot and summary to ``out``."""
    out = prepare_out(out)
    T, N, D, H = (100, 8, 8, 32) if quick else (200, 32, 16, 128)
    cases, curves, eigs, gru = measure(T, N, D, H, seed)
    small, default = cases[CASES[0][0]], cases[CASES[1][0]]
    worst_check = max(
        max(c["dh0_rel_diff_full_call"], c["dh0_rel_diff_autograd_reference"]) for c in cases.values()
    )
    numbers = {"T": T, "N": N, "D": D, "H": H, "cases": cases,
               "small_over_default_at_1": small["norm_at_1"] / default["norm_at_1"],
               "worst_dh0_check": worst_check,
               "gru": gru, "gru_over_elman_at_1": gru["default"]["norm_at_1"] / default["norm_at_1"],
               "open_gru_over_elman_at_1": gru["open"]["norm_at_1"] / default["norm_at_1"]}
    return finish("gradflow", out, numbers, summarise(numbers), [plot(numbers, curves, eigs, out)])
