"""concat: h_t = tanh(W [x_t; h_{t-1}] + b) is the two-matrix RNN written with one matrix.

The tutorial's second formula stacks the input and the previous state into one vector of D + H
numbers and applies one (H, D + H) matrix. Splitting that matrix by columns gives back the two
matrices of ``torch.nn.RNN`` and ``scratchrnn.RNN``:

    W [x_t; h_{t-1}] = [W_ih | W_hh] [x_t; h_{t-1}] = W_ih x_t + W_hh h_{t-1}

(rows of the batch, as in the code: [x_t, h_{t-1}] Wᵀ = x_t W_ihᵀ + h_{t-1} W_hhᵀ), and the one bias
b is b_ih + b_hh. So the two forms are the same function; converting two → one → two gives back
W_ih and W_hh exactly, but only the sum of the biases (any split of b is as good).

Why implementations keep two matrices: [x_t; h_{t-1}] needs h_{t-1}, so the concatenated form must
do the whole product inside the sequential loop and copy the two pieces together at every step;
with two matrices, x_t W_ihᵀ for all t is one GEMM before the loop (see ``looporder``). The packed
(D + H, H) layout of torch-rnn is Wᵀ.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scratchrnn.apps.bench.harness import fmt, interleaved_times, md_table, num_threads
from scratchrnn.apps.lab._common import LabResult, finish, new_figure, prepare_out, save
from scratchrnn.core.modules import RNN
from scratchrnn.core.reference import time_major_rnn, tutorial_weights


def concat_weights(W_ih: Tensor, W_hh: Tensor) -> Tensor:
    """W = [W_ih | W_hh]: (H, D) and (H, H) side by side, (H, D + H)."""
    return torch.cat([W_ih, W_hh], dim=1)


def split_weights(W: Tensor, input_size: int) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`concat_weights`: W_ih = W[:, :D], W_hh = W[:, D:]."""
    return W[:, :input_size], W[:, input_size:]


def to_concat_form(rnn: RNN) -> list[tuple[Tensor, Tensor]]:
    """Per layer (W (H, D_l + H), b (H,)) with b = b_ih + b_hh."""
    return [(concat_weights(W_ih, W_hh), b) for W_ih, W_hh, b in tutorial_weights(rnn)]


def from_concat_form(layers: list[tuple[Tensor, Tensor]], input_size: int) -> dict[str, Tensor]:
    """A state_dict for scratchrnn.RNN / torch.nn.RNN: b_ih = b and b_hh = 0 (only the sum counts)."""
    state = {}
    for k, (W, b) in enumerate(layers):
        W_ih, W_hh = split_weights(W, input_size if k == 0 else W.shape[0])
        state |= {
            f"weight_ih_l{k}": W_ih.clone(),
            f"weight_hh_l{k}": W_hh.clone(),
            f"bias_ih_l{k}": b.clone(),
            f"bias_hh_l{k}": torch.zeros_like(b),
        }
    return state


def concat_rnn(x: Tensor, h0: Tensor, layers: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The stacked RNN in the concatenated form, time loop outside (as the tutorial writes it).

    Args:
        x: (T, N, D). h0: (L, N, H). layers: per layer (W (H, D_l + H), b (H,)).

    Returns:
        output (T, N, H) of the last layer and h_n (L, N, H).
    """
    h = list(h0.unbind(0))
    outputs = []
    for x_t in x.unbind(0):
        inp = x_t
        for layer, (W, b) in enumerate(layers):
            xh = torch.cat([inp, h[layer]], dim=1)  # [x_t; h_{t-1}]: (N, D_l + H), a copy per step
            h[layer] = torch.tanh(xh @ W.t() + b)  # h_t = tanh(W [x_t; h_{t-1}] + b)
            inp = h[layer]
        outputs.append(inp)
    return torch.stack(outputs), torch.stack(h)


def check_forms(T: int, N: int, D: int, H: int, L: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """Both forms on one float64 problem: every max |difference| (values, gradients, conversions);
    layer 0's W = [W_ih | W_hh]; and the per-step max |difference| of the outputs."""
    dtype = torch.float64
    torch.manual_seed(seed)
    rnn = RNN(D, H, num_layers=L, dtype=dtype)
    x = torch.randn(T, N, D, dtype=dtype)
    h0 = torch.randn(L, N, H, dtype=dtype)
    g_out = torch.randn(T, N, H, dtype=dtype)

    # 1. One step: W [x; h] + b against x W_ihᵀ + b_ih + h W_hhᵀ + b_hh.
    W, b = to_concat_form(rnn)[0]
    step_concat = torch.tanh(torch.cat([x[0], h0[0]], dim=1) @ W.t() + b)
    step_two = torch.tanh(
        x[0] @ rnn.weight_ih_l0.t() + rnn.bias_ih_l0 + h0[0] @ rnn.weight_hh_l0.t() + rnn.bias_hh_l0
    )
    diffs = {"one_step_max_abs_diff": (step_concat - step_two).abs().max().item()}

    # 2. The whole sequence and its gradients: autograd on the concatenated form vs our BPTT.
    layers = [(W.detach().requires_grad_(), b.detach().requires_grad_()) for W, b in to_concat_form(rnn)]
    out_c, hn_c = concat_rnn(x, h0, layers)
    (out_c * g_out).sum().backward()
    out_r, hn_r = rnn(x, h0)
    (out_r * g_out).sum().backward()
    grad_W, grad_b = 0.0, 0.0
    for (W_k, b_k), (W_ih, W_hh, b_ih, _) in zip(layers, rnn.all_weights, strict=True):
        grad_W = max(grad_W, (W_k.grad - concat_weights(W_ih.grad, W_hh.grad)).abs().max().item())
        grad_b = max(grad_b, (b_k.grad - b_ih.grad).abs().max().item())  # dW = [dW_ih | dW_hh]
    diffs |= {
        "sequence_output_max_abs_diff": (out_c - out_r).abs().max().item(),
        "sequence_h_n_max_abs_diff": (hn_c - hn_r).abs().max().item(),
        "grad_W_vs_concat_of_dW_ih_dW_hh": grad_W,
        "grad_b_vs_db": grad_b,
        **check_conversions(rnn, [(W.detach(), b.detach()) for W, b in layers], x, h0, out_r.detach()),
    }
    per_step_diff = (out_c.detach() - out_r.detach()).abs().amax(dim=(1, 2)).numpy()
    rnn.zero_grad(set_to_none=True)
    return diffs, layers[0][0].detach().numpy(), per_step_diff


def check_conversions(rnn: RNN, layers: list[tuple[Tensor, Tensor]], x: Tensor, h0: Tensor,
                      out_r: Tensor) -> dict[str, float]:
    """Two → one → two (exact for the weights, the bias sum for the biases), one → two → one, and
    the converted weights loaded into torch.nn.RNN."""
    D = rnn.input_size
    state = from_concat_form(layers, D)
    weights = max((state[name] - p).abs().max().item() for name, p in rnn.named_parameters()
                  if name.startswith("weight"))
    bias_sum = max(
        (state[f"bias_ih_l{k}"] + state[f"bias_hh_l{k}"] - b_ih - b_hh).abs().max().item()
        for k, (_, _, b_ih, b_hh) in enumerate(rnn.all_weights)
    )
    torch_rnn = torch.nn.RNN(D, rnn.hidden_size, num_layers=rnn.num_layers, dtype=x.dtype)
    torch_rnn.load_state_dict(state)
    with torch.no_grad():
        out_t, _ = torch_rnn(x, h0)
        W_back = concat_weights(*split_weights(layers[0][0], D))
    return {
        "round_trip_two_one_two_weights": weights,
        "round_trip_two_one_two_bias_sum": bias_sum,
        "round_trip_one_two_one": (W_back - layers[0][0]).abs().max().item(),
        "converted_into_torch_nn_RNN_output_diff": (out_t - out_r).abs().max().item(),
    }


def time_forms(bench: dict, rounds: int, seed: int) -> dict[str, dict[str, float]]:
    """Forward seconds per form, float32, one thread: the concatenated form can't hoist its input
    projection."""
    torch.manual_seed(seed)
    rnn32 = RNN(bench["D"], bench["H"], num_layers=bench["L"])
    xb = torch.randn(bench["T"], bench["N"], bench["D"])
    hb = torch.zeros(bench["L"], bench["N"], bench["H"])
    form_c = [(W.detach(), b.detach()) for W, b in to_concat_form(rnn32)]
    form_two = [(W_ih.detach(), W_hh.detach(), b.detach()) for W_ih, W_hh, b in tutorial_weights(rnn32)]
    with torch.no_grad(), num_threads(1):
        return interleaved_times(
            {
                "concatenated W [x_t; h_{t-1}] (time loop)": partial(concat_rnn, xb, hb, form_c),
                "two matrices (tutorial's time loop)": partial(time_major_rnn, xb, hb, form_two),
                "two matrices, hoisted (scratchrnn.RNN)": partial(rnn32, xb, hb),
            },
            rounds,
        )


def plot(Wn: np.ndarray, per_step_diff: np.ndarray, shape: dict, out: Path) -> Path:
    """Layer 0's W = [W_ih | W_hh] as an image, and the per-step difference of the two forms."""
    T, D, H, L = shape["T"], shape["D"], shape["H"], shape["L"]
    fig, (ax_w, ax_d) = new_figure(2)
    lim = np.abs(Wn).max()
    im = ax_w.imshow(Wn, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                     extent=(-0.5, D + H - 0.5, H - 0.5, -0.5))
    ax_w.axvline(D - 0.5, color="k", lw=2)
    top = ax_w.secondary_xaxis("top")
    top.set_xticks([(D - 1) / 2, D + (H - 1) / 2], ["W_ih (H × D)", "W_hh (H × H)"])
    top.tick_params(length=0)
    ax_w.set_title(f"Layer 0: W = [W_ih | W_hh], shape ({H}, {D} + {H})")
    ax_w.set_xlabel("column: input feature (left of the line) or hidden unit of h_{t-1} (right)")
    ax_w.set_ylabel("row: hidden unit of h_t")
    fig.colorbar(im, ax=ax_w, label="weight value")
    tiny = np.finfo(np.float64).tiny
    ax_d.semilogy(np.arange(T), np.maximum(per_step_diff, tiny), "o-", ms=3, label="max over N and H")
    ax_d.axhline(np.finfo(np.float64).eps, color="k", ls="--", lw=0.8, label="float64 machine ε")
    ax_d.set_title(f"Concatenated vs two-matrix form, float64 (T = {T}, L = {L})")
    ax_d.set_xlabel("time step t")
    ax_d.set_ylabel("max |h_t(concatenated) − h_t(two matrices)|")
    ax_d.legend(fontsize=8)
    return save(fig, out / "concat.png")


def summarise(numbers: dict, times: dict) -> str:
    """The markdown summary: the checks' table and the forward times."""
    T, N, D, H, L = (numbers["shape"][k] for k in "TNDHL")
    bench, rounds = numbers["bench_shape"], numbers["rounds"]
    labels = {
        "one_step_max_abs_diff": "one step, W [x; h] + b vs x W_ihᵀ + b_ih + h W_hhᵀ + b_hh",
        "sequence_output_max_abs_diff": f"whole sequence (T = {T}, L = {L}), output",
        "sequence_h_n_max_abs_diff": "whole sequence, h_n",
        "grad_W_vs_concat_of_dW_ih_dW_hh": "autograd's dW (concatenated form) vs [dW_ih | dW_hh] (our BPTT)",
        "grad_b_vs_db": "autograd's db vs our db",
        "round_trip_two_one_two_weights": "two → one → two: W_ih, W_hh",
        "round_trip_two_one_two_bias_sum": "two → one → two: b_ih + b_hh",
        "round_trip_one_two_one": "one → two → one: W",
        "converted_into_torch_nn_RNN_output_diff": "converted weights loaded into torch.nn.RNN: output",
    }
    base = times["two matrices (tutorial's time loop)"]["best_s"]
    time_rows = [(k, f"{v['best_s'] * 1e3:.3g}", f"{base / v['best_s']:.2f}×") for k, v in times.items()]
    return "\n".join(
        [
            "# concat: W [x_t; h_{t-1}] is W_ih x_t + W_hh h_{t-1}",
            "",
            f"float64, T = {T}, N = {N}, D = {D}, H = {H}, L = {L}; W = [W_ih | W_hh] is ({H}, {D + H}), "
            "b = b_ih + b_hh.",
            "",
            md_table(["check", "max |difference|"], [(text, fmt(numbers[k])) for k, text in labels.items()]),
            "",
            "Going back from one matrix to two, b_ih = b and b_hh = 0: only the sum of the biases is "
            "determined, and only the sum matters.",
            "",
            f"## Forward time (float32, 1 thread, best of {rounds} rounds; T = {bench['T']}, "
            f"N = {bench['N']}, D = {bench['D']}, H = {bench['H']}, L = {bench['L']})",
            "",
            md_table(["form", "forward (ms)", "speed vs two matrices, time loop"], time_rows),
            "",
            "![concat](concat.png)",
        ]
    )


def run(out: str | Path, quick: bool = False, seed: int = 0) -> LabResult:
    """Check both forms agree (values, gradients, conversions) and time them; write to ``out``."""
    out = prepare_out(out)
    shape = dict(T=6, N=3, D=4, H=5, L=2) if quick else dict(T=50, N=8, D=10, H=16, L=2)
    bench = dict(T=20, N=4, D=16, H=32, L=2) if quick else dict(T=100, N=32, D=64, H=128, L=2)
    rounds = 3 if quick else 15
    diffs, Wn, per_step_diff = check_forms(**shape, seed=seed)
    times = time_forms(bench, rounds, seed)
    numbers = {"shape": shape, **diffs, "bench_shape": bench, "rounds": rounds,
               "forward_times_s": {k: v["best_s"] for k, v in times.items()}}
    return finish("concat", out, numbers, summarise(numbers, times), [plot(Wn, per_step_diff, shape, out)])
