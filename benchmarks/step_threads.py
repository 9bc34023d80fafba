"""Does running small steps on one BLAS thread pay? The C loop with and without that rule.

The C loop (src/scratchrnn/core/_steps.c, ONE_THREAD_MACS) runs a call's steps on one BLAS thread
when the per-step product has fewer than 2^20 multiply-adds (N·H²). This builds the loop a second
time with the rule off (``-DONE_THREAD_MACS=0``: torch's thread count for every step), and times
both on 2 threads, a forward and a backward of T = 100 steps, float32, in alternating rounds
(medians of 7), per step.

    flock /tmp/scratchrnn-cpu.lock .venv/bin/python benchmarks/step_threads.py

It prints a markdown table; it writes nothing but the two builds in the loop's cache.
"""

from __future__ import annotations

import statistics
import time

import torch

from scratchrnn.apps.bench.harness import cpu_name, load_average
from scratchrnn.core import accel

SIZES = [(8, 128), (17, 128), (32, 128), (64, 100), (32, 180), (64, 128), (32, 256), (64, 256), (64, 640)]
T = 100
BUILDS = {"rule on": accel._CFLAGS, "rule off": (*accel._CFLAGS, "-DONE_THREAD_MACS=0")}


def use_build(flags: tuple[str, ...]) -> None:
    """Load the C loop built with ``flags`` (built once, then cached under its own key)."""
    accel._CFLAGS = flags  # a benchmark of the loop's internals: it reaches into accel on purpose
    accel.set_enabled(True)
    assert accel.available()


def per_step_us(N: int, H: int) -> float:
    """Forward + backward of T steps through the loaded C loop, µs per step."""
    g = torch.Generator().manual_seed(0)
    out, dh = torch.randn(T * N, H, generator=g), torch.randn(T * N, H, generator=g)
    W_hh = torch.randn(H, H, generator=g) / H**0.5
    h0, h_n, dh0 = torch.zeros(N, H), torch.empty(N, H), torch.empty(N, H)
    sizes = [N] * T
    best = []
    for _ in range(3):
        a, d = out.clone(), dh.clone()
        start = time.perf_counter()
        accel.forward_steps(a, h0, W_hh, None, sizes, h_n, False, False)
        accel.backward_steps(d, a, W_hh, sizes, dh0, False, False)
        best.append(time.perf_counter() - start)
    return min(best) / T * 1e6


def main() -> None:
    torch.set_num_threads(2)
    for flags in BUILDS.values():
        use_build(flags)  # build both before timing
    print(f"{cpu_name()}, torch {torch.__version__}, 2 threads, load average {load_average()}\n")
    print("| N | H | N·H² / 2^20 | rule on µs/step | rule off µs/step | off / on |")
    print("|---|---|---|---|---|---|")
    for N, H in SIZES:
        times = {name: [] for name in BUILDS}
        for _ in range(7):
            for name, flags in BUILDS.items():
                use_build(flags)
                times[name].append(per_step_us(N, H))
        on, off = (statistics.median(times[name]) for name in BUILDS)
        print(f"| {N} | {H} | {N * H * H / 2**20:.2f} | {on:.1f} | {off:.1f} | {off / on:.2f}× |")


if __name__ == "__main__":
    main()
