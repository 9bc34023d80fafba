r"""Writing your own cell: an IndRNN (Li et al., 2018) on scratchrnn's stack.

    h_t = relu(x_t W_ihᵀ + b_ih + u ⊙ h_{t−1} + b_hh)          u: one recurrent weight per unit (H,)

The cell gives its step, its step backward and its step tangent; the stack gives layers, both
directions, packed sequences, dropout between layers, the custom operators (torch.compile,
torch.export, torch.func) and the weight gradients. This script builds a 2-layer bidirectional
stack of it, checks its gradients with ``scratchrnn.testing.check_cell`` and times a training step
against the same cell run as a Python loop on autograd.

    python examples/custom_cell.py            # T = 100, N = 32, D = H = 128
    python examples/custom_cell.py --quick    # small sizes, a few seconds (what the tests run)

Backward, given dh_t (the total ∂L/∂h_t):

    da_t = dh_t ⊙ [h_t > 0]
    dxp_t = dhp_t = da_t                   (xp_t = x_t W_ihᵀ + b_ih, hp_t = u ⊙ h_{t−1} + b_hh)
    ∂L/∂h_{t−1} = dhp_t ⊙ u                du = Σ_t Σ_n dhp_t ⊙ h_{t−1}

Tangent: ḣ_t = [h_t > 0] ⊙ (ẋp_t + ḣp_t), ḣp_t = u̇ ⊙ h_{t−1} + u ⊙ ḣ_{t−1} + ḃ_hh.
"""

from __future__ import annotations

import argparse
import time

import torch

import scratchrnn
from scratchrnn.core.stack import Layout
from scratchrnn.testing import autograd_stack, check_cell


class IndRNN(scratchrnn.Cell):
    """h_t = relu(x_t W_ihᵀ + b_ih + u ⊙ h_{t−1} + b_hh): see the module docstring."""

    name = "indrnn"

    def parameter_shapes(self, input_size, hidden_size, bias):
        shapes = {"weight_ih": (hidden_size, input_size), "weight_hh": (hidden_size,)}  # weight_hh is u
        return shapes | ({"bias_ih": (hidden_size,), "bias_hh": (hidden_size,)} if bias else {})

    def step_constants(self, W_hh, b_ih, b_hh):
        return W_hh, b_hh

    def step(self, xp_t, h_prev, constants, h_t):
        u, b_hh = constants
        hp_t = u * h_prev if b_hh is None else u * h_prev + b_hh  # hp_t = u ⊙ h_{t−1} + b_hh
        h_t.copy_(torch.relu(xp_t + hp_t))  # h_t = relu(xp_t + hp_t)

    def recurrent(self, h, W_hh):
        return h * W_hh  # u ⊙ h

    def recurrent_backward(self, dhp, W_hh):
        return dhp * W_hh  # ∂L/∂h_{t−1} = dhp_t ⊙ u

    def recurrent_weight_grad(self, dhp, h_prev, matmul=None):
        return (dhp * h_prev).sum(0)  # du = Σ dhp_t ⊙ h_{t−1}

    def residuals(self, x, h_prev, out, W_ih, W_hh, b_ih, b_hh):
        return (out > 0).to(out.dtype)  # f'(a_t) from h_t

    def step_backward(self, dh_t, residuals_t, h_prev):
        da_t = dh_t * residuals_t  # da_t = dh_t ⊙ [h_t > 0]
        return da_t, da_t, None

    def step_tangent(self, xp_dot_t, hp_dot_t, h_dot_prev, residuals_t, h_prev):
        return residuals_t * (xp_dot_t + hp_dot_t)  # ḣ_t = f'(a_t) ⊙ (ẋp_t + ḣp_t)


def seconds_per_step(run, repeats: int) -> float:
    run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (the tests' run)")
    args = parser.parse_args(argv)
    T, N, D, H, repeats = (8, 4, 5, 6, 2) if args.quick else (100, 32, 128, 128, 5)

    cell = IndRNN()
    margins = check_cell(cell)  # registers the cell; gradcheck, and autograd over its forward
    print(f"check_cell: largest difference from autograd {max(margins.values()):.1e}")

    torch.manual_seed(0)
    rnn = scratchrnn.Recurrent(cell, D, H, num_layers=2, bidirectional=True)
    print(rnn)
    x = torch.randn(T, N, D)
    output, h_n = rnn(x)  # (T, N, 2H), (4, N, H)
    print(f"output {tuple(output.shape)}, h_n {tuple(h_n.shape)}")

    weights = list(rnn.parameters())
    layout = Layout(rnn.num_layers, rnn.bidirectional, rnn.bias)
    hx = torch.zeros(4, N, H)

    def ours() -> None:
        output, h_n = rnn(x, hx)
        (output.square().sum() + h_n.sum()).backward()

    def on_autograd() -> None:
        output, h_n = autograd_stack(cell, x.reshape(-1, D), hx, weights, [N] * T, layout)
        (output.square().sum() + h_n.sum()).backward()

    ms_ours, ms_autograd = (1e3 * seconds_per_step(run, repeats) for run in (ours, on_autograd))
    print(f"training step, T={T} N={N} D={D} H={H}, 2 layers, bidirectional, float32:")
    print(f"  scratchrnn stack, hand-written backward: {ms_ours:8.2f} ms")
    print(f"  the same cell as a loop on autograd:     {ms_autograd:8.2f} ms  ({ms_autograd / ms_ours:.2f}x)")


if __name__ == "__main__":
    main()

