"""The GRU rows of ``scratchrnn bench``: scratchrnn.GRU side by side with torch.nn.GRU.

The same shapes, modes (``fwd`` under no_grad, ``fwd+bwd`` of output.sum()) and thread counts as
the RNN rows of bench/rnn.py, timed in the same interleaved rounds; the peers (JAX, torch.compile,
oneDNN's GRU primitive) are in bench/peers.py. Where this build has no scratchrnn.GRU yet
(apps/ours.py says which), nn.GRU is timed alone and the report says so.

    scratchrnn.GRU  the drop-in for nn.GRU (hand-written BPTT), with nn.GRU's state_dict
    nn.GRU          torch.nn.GRU (its CPU step loop; autograd for the backward)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from scratchrnn.apps.bench.harness import fmt_ms, md_table, spread
from scratchrnn.apps.ours import NO_GRU, gru_class

OURS, THEIRS = "scratchrnn.GRU", "nn.GRU"
VARIANTS = (OURS, THEIRS)
MODES = ("fwd", "fwd+bwd")
CHECK_TOL = {"rtol": 1e-4, "atol": 1e-5}  # float32 outputs of two summation orders


def available_variants() -> tuple[str, ...]:
    """The variants this build can time: both, or nn.GRU alone while scratchrnn.GRU is missing."""
    return VARIANTS if gru_class() is not None else (THEIRS,)


class GruCase:
    """One shape's GRUs, sharing one set of weights (nn.GRU's init, loaded into ours) and one input.

    ``shape`` is bench/rnn.py's Shape (T, N, D, H, layers, bidirectional).
    """

    def __init__(self, shape, dtype: torch.dtype = torch.float32, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.shape = shape
        kwargs = {"num_layers": shape.layers, "bidirectional": shape.bidirectional, "dtype": dtype}
        self.models: dict[str, nn.Module] = {THEIRS: nn.GRU(shape.D, shape.H, **kwargs)}
        ours = gru_class()
        if ours is not None:
            self.models[OURS] = ours(shape.D, shape.H, **kwargs)
            self.models[OURS].load_state_dict(self.models[THEIRS].state_dict())
        self.x = torch.randn(shape.T, shape.N, shape.D, dtype=dtype)
        self.x_grad = self.x.clone().requires_grad_()

    def check(self) -> None:
        """Ours computes nn.GRU's output (checked once before timing; the tests check gradients)."""
        if OURS not in self.models:
            return
        with torch.no_grad():
            got, want = (self.models[v](self.x)[0] for v in (OURS, THEIRS))
        try:
            torch.testing.assert_close(got, want, **CHECK_TOL)
        except AssertionError as err:
            raise RuntimeError(f"{OURS} differs from {THEIRS} at {self.shape}: not timed\n{err}") from None

    def leaves(self, variant: str) -> list[Tensor]:
        """The tensors whose gradient a training step of ``variant`` computes."""
        return [self.x_grad, *self.models[variant].parameters()]

    def zero_grad(self) -> None:
        """set_to_none on every leaf (untimed, before each call), as optimizer.zero_grad() does."""
        for t in (self.x_grad, *(p for m in self.models.values() for p in m.parameters())):
            t.grad = None

    def runner(self, variant: str, mode: str) -> Callable[[], Tensor]:
        """The call that is timed for (variant, mode)."""
        model = self.models[variant]
        if mode == "fwd":

            def fwd() -> Tensor:
                with torch.no_grad():
                    return model(self.x)[0]

            return fwd

        def fwd_bwd() -> Tensor:
            output = model(self.x_grad)[0]
            output.sum().backward()
            return output

        return fwd_bwd


# --------------------------------------------------------------------------------------------
# The report's GRU part. Samples are keyed (threads, shape, mode, variant), as the RNN's.
# --------------------------------------------------------------------------------------------


def _geomean(values: Sequence[float]) -> float:
    return statistics.geometric_mean(values)


def _speedups(samples: Mapping, shapes: Sequence, n_threads: int, mode: str) -> dict:
    """nn.GRU / ours per shape (> 1: ours is faster)."""
    return {
        shape: statistics.median(samples[n_threads, shape, mode, THEIRS])
        / statistics.median(samples[n_threads, shape, mode, OURS])
        for shape in shapes
    }


def speed_table(samples: Mapping, shapes: Sequence, threads: Sequence[int]) -> str:
    """Medians (ms per call) of each GRU and their ratio, one row per (threads, mode, shape)."""
    variants = [v for v in VARIANTS if any(k[3] == v for k in samples)]
    head = ["threads", "shape (T, N, D, H, L)", "mode", *(f"{v} ms" for v in variants), "nn.GRU / ours",
            "spread"]
    rows = []
    for n_threads in threads:
        for mode in MODES:
            for shape in shapes:
                cell = {v: samples[n_threads, shape, mode, v] for v in variants}
                m = {v: statistics.median(s) for v, s in cell.items()}
                ratio = f"{m[THEIRS] / m[OURS]:.2f}×" if OURS in m else "–"
                rows.append([str(n_threads), str(shape), mode, *(fmt_ms(m[v]) for v in variants), ratio,
                             f"{max(spread(s) for s in cell.values()):.0%}"])
    return md_table(head, rows)


def geomean_table(samples: Mapping, shapes: Sequence, threads: Sequence[int]) -> str:
    rows = [[str(n), mode, f"{_geomean(list(_speedups(samples, shapes, n, mode).values())):.2f}×",
             f"{min(_speedups(samples, shapes, n, mode).values()):.2f}×"]
            for n in threads for mode in MODES]
    return md_table(["threads", "mode", "nn.GRU / ours (geometric mean)", "nn.GRU / ours (min)"], rows)


def target_checks(samples: Mapping, shapes: Sequence, threads: Sequence[int], memory: dict | None,
                  targets: Mapping[str, float]) -> list[tuple[str, str, bool | None]]:
    """Issue 17's goals for the GRU (thresholds from the targets file's [gru] table): ahead of
    nn.GRU at every shape, both modes, every thread count; a training step's peak memory at most
    a given multiple of nn.GRU's. None (n/a) where scratchrnn.GRU is not built or not measured."""
    ours = any(k[3] == OURS for k in samples)
    checks = []
    for mode, key in (("fwd", "fwd_min_speedup"), ("fwd+bwd", "fwd_bwd_min_speedup")):
        for n_threads in threads:
            target = (f"GRU {mode}, {n_threads} thread(s): ahead of nn.GRU at every shape "
                      f"(min nn.GRU / ours ≥ {targets[key]:g})")
            if not ours:
                checks.append((target, NO_GRU, None))
                continue
            ratios = _speedups(samples, shapes, n_threads, mode)
            worst = min(ratios, key=ratios.get)
            checks.append((target, f"{ratios[worst]:.2f}× at {worst}", ratios[worst] >= targets[key]))
    target = f"GRU: peak memory of a training step ≤ {targets['memory_max_ratio']:g}× nn.GRU's"
    if memory is None or OURS not in memory:
        checks.append((target, NO_GRU if not ours else "not measured", None))
    else:
        r = memory[OURS]["bytes"] / memory[THEIRS]["bytes"]
        checks.append((target, f"{r:.2f}×", r <= targets["memory_max_ratio"]))
    return checks


METHOD = """\
**GRU rows.** `scratchrnn.GRU` (the drop-in for `torch.nn.GRU`, hand-written BPTT) and
`torch.nn.GRU`, with nn.GRU's init loaded into ours through the state_dict; the same shapes,
modes, thread counts and interleaved rounds as the RNN rows above, timed in the same run. Ours is
checked once against nn.GRU's output (float32, rtol 1e-4) before it is timed. Memory: one
training step at the memory shape, each GRU in its own fresh subprocess, as for the RNN."""
