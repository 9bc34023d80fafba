"""The autocast rows of the benchmark: scratchrnn.RNN against nn.RNN, both under the same
``torch.autocast('cpu', dtype)``, forward and forward + backward, with each one's error against
float64 beside the speed (issue 21).

Both modules hold the same float32 weights (nn.RNN's init) and read the same float32 input;
autocast runs both in the lower precision. The error is max |y − y₆₄| / max |y₆₄| of the output
(forward) and of the weight gradients (forward + backward, the worst parameter), y₆₄ being
nn.RNN in float64 on the same input (autocast leaves float64 alone).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch
from torch import nn

from scratchrnn.apps.bench.harness import interleaved_samples, md_table, num_threads
from scratchrnn.core.modules import RNN

__all__ = ["AUTOCAST_METHOD", "DTYPES", "autocast_table", "measure_autocast"]

DTYPES = {"bf16": torch.bfloat16}
AUTOCAST_METHOD = (
    "Both modules under the same `torch.autocast('cpu', dtype)`, the same float32 weights and "
    "input; timed as the rows above (interleaved rounds, median). error: max |y − y64| / max |y64| "
    "of the output (fwd) or of the weight gradients (fwd+bwd, the worst parameter), y64 from "
    "nn.RNN in float64."
)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


class _AutocastCase:
    def __init__(self, shape, dtype: torch.dtype) -> None:
        torch.manual_seed(0)
        kwargs = {"num_layers": shape.layers, "bidirectional": shape.bidirectional}
        self.modules = {"scratchrnn": RNN(shape.D, shape.H, **kwargs),
                        "nn.RNN": nn.RNN(shape.D, shape.H, **kwargs)}
        self.modules["nn.RNN"].load_state_dict(self.modules["scratchrnn"].state_dict())
        self.oracle = nn.RNN(shape.D, shape.H, dtype=torch.float64, **kwargs)
        self.oracle.load_state_dict(self.modules["scratchrnn"].state_dict())
        self.x = torch.randn(shape.T, shape.N, shape.D)
        self.dtype = dtype

    def _step(self, module: nn.Module, backward: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=self.dtype), torch.set_grad_enabled(backward):
            out = module(self.x)[0]
        if backward:
            out.float().sum().backward()
        return out

    def runner(self, variant: str, mode: str) -> Callable[[], object]:
        return lambda: self._step(self.modules[variant], mode == "fwd+bwd")

    def zero_grad(self) -> None:
        for m in self.modules.values():
            m.zero_grad(set_to_none=True)

    def errors(self, variant: str) -> dict[str, float]:
        """The relative errors against float64 of the output and of the worst weight gradient."""
        want = self.oracle(self.x.double())[0]
        want.sum().backward()
        self.zero_grad()
        got = self._step(self.modules[variant], backward=True)
        grads = zip(self.modules[variant].parameters(), self.oracle.parameters(), strict=True)
        errors = {"fwd": _rel(got.detach(), want.detach()),
                  "fwd+bwd": max(_rel(p.grad, q.grad) for p, q in grads)}
        self.oracle.zero_grad(set_to_none=True)
        return errors


def measure_autocast(shapes: Sequence, threads: Sequence[int], rounds: int,
                     progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (threads, shape, dtype, mode): ms per call of each and the error of each."""
    rows = []
    variants = ("scratchrnn", "nn.RNN")
    for name, dtype in DTYPES.items():
        cases = {shape: _AutocastCase(shape, dtype) for shape in shapes}
        errors = {(shape, v): case.errors(v) for shape, case in cases.items() for v in variants}
        for n in threads:
            with num_threads(n):
                cells = [{(shape, mode, v): case.runner(v, mode) for v in variants}
                         for shape, case in cases.items() for mode in ("fwd", "fwd+bwd")]
                setup = {key: cases[key[0]].zero_grad for cell in cells for key in cell}
                label = f"autocast {name} threads={n}"
                samples = interleaved_samples(
                    cells, rounds, setup=setup, min_sample_s=0.02, max_reps=20,
                    progress=progress and (lambda text, label=label: progress(f"{label} {text}")),
                )
            for shape in shapes:
                for mode in ("fwd", "fwd+bwd"):
                    ms = {v: 1e3 * statistics.median(samples[(shape, mode, v)]) for v in variants}
                    rows.append({"threads": n, "shape": str(shape), "dtype": name, "mode": mode,
                                 "ms": ms, "error": {v: errors[(shape, v)][mode] for v in variants}})
    return rows


def autocast_table(rows: Sequence[dict]) -> str:
    """The rows as markdown: speed-up of ours over nn.RNN, and both errors against float64."""
    return md_table(
        ["threads", "shape", "autocast", "mode", "scratchrnn ms", "nn.RNN ms", "speed-up",
         "scratchrnn error", "nn.RNN error"],
        [[r["threads"], r["shape"], r["dtype"], r["mode"], r["ms"]["scratchrnn"], r["ms"]["nn.RNN"],
          f"{r['ms']['nn.RNN'] / r['ms']['scratchrnn']:.2f}x", f"{r['error']['scratchrnn']:.1e}",
          f"{r['error']['nn.RNN']:.1e}"] for r in rows],
    )
