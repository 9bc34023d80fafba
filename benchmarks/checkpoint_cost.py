"""What checkpointing costs: the time of one checkpoint.pt (gathered, serialised, written and
fsynced, then renamed: scratchrnn.lm.files.atomic_write) as a percentage of the training time
between two checkpoints at the default cadence (--checkpoint-interval steps).

Run from the repository root on a quiet machine::

    python benchmarks/checkpoint_cost.py                 # the default model (H = 640, N = 64, T = 64)
    python benchmarks/checkpoint_cost.py --hidden-size 64 --steps 20

It prints one Markdown table row (append it to benchmarks/LM_RESULTS.md with --out). One process;
under torchrun a checkpoint also gathers the hidden state and the generators of every rank (a few
kB each), and only rank 0 writes.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.train import Trainer

HEADER = ("| model | step (ms, median) | checkpoint (ms, median) | size (MB) | interval (steps) "
          "| overhead |\n|---|---|---|---|---|---|")


def measure(hidden_size: int, steps: int, saves: int, interval: int, threads: int | None) -> str:
    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(hidden_size=hidden_size, out=str(Path(tmp) / "run"), max_steps=steps + 1,
                             time_budget=None, progress=False, sample_length=0, checkpoint_interval=interval)
        trainer = Trainer(config)
        try:
            h, step_ms = None, []
            lr = config.lr
            for k in range(steps + 1):  # the first step warms up (allocations, threads): not counted
                x, y = trainer.batches[k % len(trainer.batches)]
                t0 = time.perf_counter()
                _, h = trainer.train_step(x, y, lr, h)
                if k:
                    step_ms.append(1e3 * (time.perf_counter() - t0))
            trainer.h, trainer.step = h, steps
            save_ms = []
            for _ in range(saves):
                t0 = time.perf_counter()
                trainer.save_checkpoint()
                save_ms.append(1e3 * (time.perf_counter() - t0))
            size = trainer.files.checkpoint.stat().st_size / 1e6
        finally:
            trainer.files.close()
    step, save = statistics.median(step_ms), statistics.median(save_ms)
    c = config
    model = f"H = {c.hidden_size}, E = {c.embedding_dim}, N = {c.batch_size}, T = {c.seq_len}, {c.optimizer}"
    return (f"| {model} | {step:.1f} | {save:.1f} | {size:.2f} | {interval} | "
            f"**{100 * save / (interval * step):.2f}%** |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden-size", type=int, default=TrainConfig.hidden_size)
    p.add_argument("--steps", type=int, default=30, help="timed training steps")
    p.add_argument("--saves", type=int, default=10, help="timed checkpoints")
    p.add_argument("--interval", type=int, default=TrainConfig.checkpoint_interval,
                   help="steps between checkpoints (default: --checkpoint-interval's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None, help="append the row (and a header if new) to this file")
    args = p.parse_args()
    row = measure(args.hidden_size, args.steps, args.saves, args.interval, args.threads)
    cpu = platform.processor() or platform.machine()
    where = f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    text = f"{HEADER}\n{row}\n\n({where}; python benchmarks/checkpoint_cost.py)"
    print(text)
    if args.out is not None:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(f"\n## Checkpoint cost\n\n{text}\n")


if __name__ == "__main__":
    main()
