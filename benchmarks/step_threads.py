"""Where a second thread starts to pay for one step's recurrent product, (N, H) @ (H, H).

The C loop (src/scratchrnn/core/_steps.c, ONE_THREAD_MACS) runs a call's steps on one BLAS
thread when N·H² is below 2^20 multiply-adds; this measures the product it issues per step,
float32 through torch.mm (MKL), on 1 and 2 threads, in alternating rounds (medians of 7).

    flock /tmp/scratchrnn-cpu.lock .venv/bin/python benchmarks/step_threads.py

It prints a markdown table; it writes nothing.
"""

from __future__ import annotations

import statistics
import time

import torch

from scratchrnn.apps.bench.harness import cpu_name, load_average

SIZES = [(8, 128), (16, 128), (32, 128), (64, 128), (32, 256), (64, 256), (128, 128), (32, 512),
         (64, 512), (64, 640)]


def per_call_us(N: int, H: int, threads: int, calls: int = 200) -> float:
    torch.set_num_threads(threads)
    h, W, a = torch.randn(N, H), torch.randn(H, H), torch.empty(N, H)
    for _ in range(10):
        torch.mm(h, W, out=a)
    start = time.perf_counter()
    for _ in range(calls):
        torch.mm(h, W, out=a)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    print(f"{cpu_name()}, torch {torch.__version__}, load average {load_average()}\n")
    print("| N | H | N·H² / 2^20 | 1 thread µs | 2 threads µs | 1 thread / 2 threads |")
    print("|---|---|---|---|---|---|")
    for N, H in SIZES:
        rounds = {1: [], 2: []}
        for _ in range(7):
            for threads in (1, 2):
                rounds[threads].append(per_call_us(N, H, threads))
        one, two = statistics.median(rounds[1]), statistics.median(rounds[2])
        print(f"| {N} | {H} | {N * H * H / 2**20:.2f} | {one:.1f} | {two:.1f} | {one / two:.2f}× |")


if __name__ == "__main__":
    main()
