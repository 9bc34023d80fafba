"""looporder: the time loop outside (the tutorial's order) or the layer loop outside (ours)?

The tutorial claims the loops cannot be swapped. They can, as long as each layer keeps its own
state h^(l): layer l at step t needs only h^(l)_{t-1} (its own past) and h^(l-1)_t (the layer below,
same step), and running the whole of layer l − 1 first has both ready. This experiment shows it:

1. **Same numbers.** In float64, the tutorial's loop (``scratchrnn.core.reference.time_major_rnn``,
   autograd), the same loop with the two ``for`` lines swapped (:func:`layer_major_loop`,
   autograd) and ``scratchrnn.RNN`` (layer-major, hand-written BPTT) give the same outputs, final
   states and gradients.
2. **Speed.** Swapping the loops alone changes nothing, since the same operations run. What it
   allows is hoisting: once a layer's whole input sequence is known, x_t W_ihᵀ + b for every t is
   one big GEMM (:func:`layer_major_hoisted_loop`) and only h_{t-1} W_hhᵀ stays in the
   sequential loop. That is what fast implementations (cuDNN, torch.nn.RNN on CPU, ours) do.
3. **Why unsqueeze?** The tutorial gathers each step's (N, H) state with ``h_t.unsqueeze(1)`` and
   ``torch.cat(..., dim=1)``, which builds (N, T, H): batch-first. ``torch.stack(..., dim=0)``
   builds (T, N, H) without the unsqueeze, and a preallocated (T, N, H) buffer filled step by step
   (what ``scratchrnn.core.functional.layer_forward`` does) needs neither a list nor the final copy.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scratchrnn.apps.bench.harness import fmt, interleaved_times, md_table, num_threads
from scratchrnn.apps.lab._common import LabResult, finish, new_figure, prepare_out, save
from scratchrnn.core import accel
from scratchrnn.core.modules import RNN
from scratchrnn.core.reference import time_major_rnn, tutorial_weights

Weights = list[tuple[Tensor, Tensor, Tensor]]


def layer_major_loop(x: Tensor, h0: Tensor, weights: Weights) -> tuple[Tensor, Tensor]:
    """The tutorial's loop with its two ``for`` lines swapped: layers outside, time inside.

    Same arguments and results as :func:`scratchrnn.core.reference.time_major_rnn` (tanh). Each layer
    keeps its own state and hands its whole output sequence to the next layer.
    """
    inp = list(x.unbind(0))  # the layer's input sequence: T tensors of (N, D)
    h_n = []
    for W_ih, W_hh, b in weights:  # layers outside ...
        h = h0[len(h_n)]  # this layer's own state
        outs = []
        for x_t in inp:  # ... time inside
            h = torch.tanh(x_t @ W_ih.t() + h @ W_hh.t() + b)
            outs.append(h)
        h_n.append(h)
        inp = outs  # the whole sequence goes up to the next layer
    return torch.stack(inp), torch.stack(h_n)


def layer_major_hoisted_loop(x: Tensor, h0: Tensor, weights: Weights) -> tuple[Tensor, Tensor]:
    """:func:`layer_major_loop` with the input projection of all steps taken out of the loop."""
    T, N = x.shape[0], x.shape[1]
    inp = x
    h_n = []
    for W_ih, W_hh, b in weights:
        proj = (inp.reshape(T * N, -1) @ W_ih.t() + b).view(T, N, -1)  # one GEMM for all t
        h = h0[len(h_n)]
        outs = []
        for p_t in proj.unbind(0):  # unbind, not proj[t]: its backward is one stack, not T copies
            h = torch.tanh(p_t + h @ W_hh.t())  # only h_{t-1} W_hhᵀ is left per step
            outs.append(h)
        h_n.append(h)
        inp = torch.stack(outs)
    return inp, torch.stack(h_n)


def _outputs_and_grads(fn, rnn: RNN, x: Tensor, h0: Tensor, g_out: Tensor, g_hn: Tensor) -> list[Tensor]:
    """output, h_n and the gradients of L = Σ output·g_out + Σ h_n·g_hn w.r.t. x, h0, weights."""
    x = x.detach().requires_grad_(True)
    h0 = h0.detach().requires_grad_(True)
    params = list(rnn.parameters())
    output, h_n = fn(x, h0)
    loss = (output * g_out).sum() + (h_n * g_hn).sum()
    grads = torch.autograd.grad(loss, [x, h0, *params])
    return [output.detach(), h_n.detach(), *grads]


def compare(T: int, N: int, D: int, H: int, L: int, seed: int = 0) -> dict[str, dict[str, float]]:
    """Max |difference| from the tutorial's time-major loop, float64, per quantity and variant."""
    torch.manual_seed(seed)
    dtype = torch.float64
    rnn = RNN(D, H, num_layers=L, dtype=dtype)
    x = torch.randn(T, N, D, dtype=dtype)
    h0 = torch.randn(L, N, H, dtype=dtype)
    g_out, g_hn = torch.randn(T, N, H, dtype=dtype), torch.randn(L, N, H, dtype=dtype)
    names = ["output", "h_n", "dx", "dh0", *(f"d{n}" for n, _ in rnn.named_parameters())]
    variants = {
        "time-major loop (tutorial, autograd)": lambda x, h: time_major_rnn(x, h, tutorial_weights(rnn)),
        "layer-major loop (swapped, autograd)": lambda x, h: layer_major_loop(x, h, tutorial_weights(rnn)),
        "scratchrnn.RNN (layer-major, hand-written BPTT)": lambda x, h: rnn(x, h),
    }
    results = {k: _outputs_and_grads(fn, rnn, x, h0, g_out, g_hn) for k, fn in variants.items()}
    reference = results.pop("time-major loop (tutorial, autograd)")
    return {
        variant: {name: (a - b).abs().max().item() for name, a, b in zip(names, got, reference, strict=True)}
        for variant, got in results.items()
    }


def assemble_outputs(T: int, N: int, H: int, seed: int = 0) -> dict[str, dict]:
    """Three ways to gather T states of shape (N, H) into one output: shapes and differences."""
    gen = torch.Generator().manual_seed(seed)
    states = [torch.randn(N, H, generator=gen, dtype=torch.float64) for _ in range(T)]
    tutorial = torch.cat([h_t.unsqueeze(1) for h_t in states], dim=1)  # (N, T, H): batch-first
    stacked = torch.stack(states, dim=0)  # (T, N, H)
    prealloc = torch.empty(T, N, H, dtype=torch.float64)  # (T, N, H), filled in place
    for t, h_t in enumerate(states):
        prealloc[t] = h_t
    cat_dim0 = torch.cat(states, dim=0).view(T, N, H)  # no unsqueeze: (T·N, H) viewed as (T, N, H)
    return {
        "cat(unsqueeze(1), dim=1) (tutorial)": {
            "shape": list(tutorial.shape),
            "max_diff_from_stack": (tutorial.transpose(0, 1) - stacked).abs().max().item(),
        },
        "stack(dim=0)": {"shape": list(stacked.shape), "max_diff_from_stack": 0.0},
        "cat(dim=0).view(T, N, H)": {
            "shape": list(cat_dim0.shape),
            "max_diff_from_stack": (cat_dim0 - stacked).abs().max().item(),
        },
        "preallocated out[t] = h_t": {
            "shape": list(prealloc.shape),
            "max_diff_from_stack": (prealloc - stacked).abs().max().item(),
        },
    }


def _use_c_loop(flag: bool) -> None:
    """Switch scratchrnn.RNN's step loop to C (or to PyTorch), and load it now, not while timed."""
    accel.set_enabled(flag)
    accel.available()


def time_variants(T: int, N: int, D: int, H: int, L: int, rounds: int, seed: int = 0) -> dict:
    """Seconds per call, float32, one thread: forward (no_grad) and forward + backward, per variant.

    Returns, per variant, the best and the median over ``rounds`` interleaved rounds.
    """
    torch.manual_seed(seed)
    rnn = RNN(D, H, num_layers=L)
    ref = torch.nn.RNN(D, H, num_layers=L)
    ref.load_state_dict(rnn.state_dict())
    x = torch.randn(T, N, D)
    h0 = torch.zeros(L, N, H)
    variants = {
        "time-major loop (tutorial)": lambda x, h: time_major_rnn(x, h, tutorial_weights(rnn)),
        "layer-major loop (swapped)": lambda x, h: layer_major_loop(x, h, tutorial_weights(rnn)),
        "layer-major, hoisted x W_ihᵀ": lambda x, h: layer_major_hoisted_loop(x, h, tutorial_weights(rnn)),
        "scratchrnn.RNN, PyTorch step loop": lambda x, h: rnn(x, h),
        "scratchrnn.RNN, C step loop": lambda x, h: rnn(x, h),
        "torch.nn.RNN": lambda x, h: ref(x, h),
    }
    had_c_loop = accel.available()
    if not had_c_loop:  # no C compiler here: only the PyTorch loop exists
        del variants["scratchrnn.RNN, C step loop"]
    setup = {name: partial(_use_c_loop, name.endswith("C step loop")) for name in variants}

    def forward(fn):
        with torch.no_grad():
            fn(x, h0)

    def train_step(fn):
        output, _ = fn(x.detach().requires_grad_(True), h0)
        output.sum().backward()

    # One thread: on a machine shared with other work, two threads wait on each other and the
    # ranking drowns in noise; the comparison is about the number and size of the operations.
    try:
        with num_threads(1):
            fwd = interleaved_times({k: partial(forward, f) for k, f in variants.items()}, rounds, setup)
            both = interleaved_times(
                {k: partial(train_step, f) for k, f in variants.items()}, rounds, setup
            )
    finally:
        accel.set_enabled(had_c_loop)
    rnn.zero_grad(set_to_none=True)
    ref.zero_grad(set_to_none=True)
    return {
        k: {"forward_s": fwd[k]["best_s"], "forward_median_s": fwd[k]["median_s"],
            "forward_backward_s": both[k]["best_s"], "forward_backward_median_s": both[k]["median_s"]}
        for k in variants
    }


def _shape_label(b: dict) -> str:
    return f"T = {b['T']}, N = {b['N']}, D = {b['D']}, H = {b['H']}, L = {b['L']}"


def measure(quick: bool, seed: int) -> dict:
    """The float64 differences, the output assembly and the timings at each benchmark shape."""
    check = dict(T=7, N=3, D=5, H=6, L=3) if quick else dict(T=50, N=8, D=16, H=32, L=3)
    # Two shapes: a small batch, where the per-step overhead of each operation dominates, and a
    # larger one, where the arithmetic does.
    rounds = 3 if quick else 15
    shapes = (
        [dict(T=20, N=4, D=16, H=32, L=2)]
        if quick
        else [dict(T=100, N=8, D=64, H=128, L=2), dict(T=100, N=64, D=128, H=128, L=2)]
    )
    diffs = compare(**check, seed=seed)
    benches = []
    for shape in shapes:
        timings = time_variants(**shape, rounds=rounds, seed=seed)
        base = timings["time-major loop (tutorial)"]
        for t in timings.values():
            t["forward_speedup"] = base["forward_s"] / t["forward_s"]
            t["forward_backward_speedup"] = base["forward_backward_s"] / t["forward_backward_s"]
        benches.append({"shape": shape, "timings": timings})
    return {
        "check_shape": check,
        "max_abs_diff_float64": diffs,
        "worst_abs_diff_float64": {variant: max(d.values()) for variant, d in diffs.items()},
        "rounds": rounds,
        "benchmarks": benches,
        "output_assembly": assemble_outputs(T=4, N=5, H=8, seed=seed),
    }


def plot(benches: list[dict], rounds: int, out: Path) -> Path:
    """Speed-up over the tutorial's loop per variant: forward + backward, and forward alone."""
    fig, axes = new_figure(2, width=6.4, height=3.2 + 0.9 * len(benches))
    names = list(benches[0]["timings"])
    height = 0.8 / len(benches)
    ypos = np.arange(len(names))
    for ax, key, title in (
        (axes[0], "forward_backward_speedup", "forward + backward"),
        (axes[1], "forward_speedup", "forward (no_grad)"),
    ):
        for i, bench in enumerate(benches):
            values = [bench["timings"][n][key] for n in names]
            y = ypos + (i - (len(benches) - 1) / 2) * height
            ax.barh(y, values, height=height, color=f"C{i}", label=_shape_label(bench["shape"]))
            for yy, v in zip(y, values, strict=True):
                ax.text(v, yy, f" {v:.2f}×", va="center", fontsize=7)
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yticks(ypos, names)
        ax.tick_params(axis="y", labelleft=ax is axes[0])
        ax.invert_yaxis()
        ax.set_xlabel("speed-up over the tutorial's time-major loop (×, higher is faster)")
        ax.set_xlim(0, max(b["timings"][n][key] for b in benches for n in names) * 1.25)
        ax.set_title(f"{title}: float32, 1 thread, best of {rounds} rounds", fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    return save(fig, out / "looporder.png")


def summarise(numbers: dict) -> str:
    """The markdown summary: the differences, the speed tables and the output assembly."""
    diffs, benches = numbers["max_abs_diff_float64"], numbers["benchmarks"]
    assembly, rounds, c = numbers["output_assembly"], numbers["rounds"], numbers["check_shape"]
    diff_rows = [
        (variant, fmt(d["output"]), fmt(d["h_n"]), fmt(d["dx"]), fmt(d["dh0"]),
         fmt(max(v for k, v in d.items() if k.startswith("dweight") or k.startswith("dbias"))))
        for variant, d in diffs.items()
    ]
    speed_sections = []
    for bench in benches:
        rows = [
            (n, f"{t['forward_s'] * 1e3:.3g}", f"{t['forward_speedup']:.2f}×",
             f"{t['forward_backward_s'] * 1e3:.3g}", f"{t['forward_backward_speedup']:.2f}×")
            for n, t in bench["timings"].items()
        ]
        speed_sections += [
            f"### {_shape_label(bench['shape'])}",
            "",
            md_table(["variant", "forward (ms)", "speed-up", "forward + backward (ms)", "speed-up"], rows),
            "",
        ]
    asm_rows = [(k, tuple(v["shape"]), fmt(v["max_diff_from_stack"])) for k, v in assembly.items()]
    return "\n".join(
        [
            "# looporder: time loop outside (tutorial) vs layer loop outside (ours)",
            "",
            f"## Same numbers (float64, {_shape_label(c)} layers)",
            "",
            "Max |difference| from the tutorial's time-major loop (autograd), for the output, h_n and "
            "the gradients of L = Σ output·g + Σ h_n·g' (random g, g'):",
            "",
            md_table(["variant", "output", "h_n", "dx", "dh0", "d(weights), worst"], diff_rows),
            "",
            f"## Speed (float32, 1 thread, best of {rounds} interleaved rounds)",
            "",
            *speed_sections,
            "Speed-ups are relative to the tutorial's time-major loop. The swapped loop runs the same "
            "operations as the tutorial's; what the swap makes possible is hoisting x_t W_ihᵀ + b "
            "out of the time loop into one GEMM (the third row, still on autograd). scratchrnn.RNN "
            "hoists too, and adds in-place steps and a hand-written backward; its step loop runs in "
            "PyTorch ops or, where a C compiler is found, in C (scratchrnn/core/_steps.c).",
            "",
            "![looporder](looporder.png)",
            "",
            "## Why unsqueeze: gathering T = 4 states of shape (N, H) = (5, 8)",
            "",
            md_table(["method", "shape", "max abs diff from stack (after transposing)"], asm_rows),
        ]
    )


def run(out: str | Path, quick: bool = False, seed: int = 0) -> LabResult:
    """Compare the two loop orders (numbers and speed) and the output assembly; write to ``out``."""
    out = prepare_out(out)
    numbers = measure(quick, seed)
    fig_path = plot(numbers["benchmarks"], numbers["rounds"], out)
    return finish("looporder", out, numbers, summarise(numbers), [fig_path])
