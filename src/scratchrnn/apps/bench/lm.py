"""The language model, ours against the same model built on torch.nn.RNN + autograd + torch.optim.

Two measurements, both written to benchmarks/LM_RESULTS.md (and printed):

1. Throughput, side by side in one process. Both models are built by the training loop itself
   (``Trainer`` with backend "scratch" and "torch": same settings, same seed, so the same initial
   weights) and fed the same stream of training batches, the state carried from chunk to chunk.
   Blocks of steps alternate between the two (ABBA order) so that a load change on the machine
   hits both alike; each block gives chars/s, and the speed-up is the median over rounds of the
   per-round ratio.
2. Quality, optional (``--quality SECONDS``): a full ``scratchrnn train`` run of each, one after
   the other, with the default settings and that time budget; their validation losses.

Timing on a shared machine: run it under the lock the team uses, e.g.

    flock /tmp/scratchrnn-cpu.lock .venv/bin/python benchmarks/lm_throughput.py --quality 180

Arguments other than the benchmark's own override TrainConfig fields (``--hidden-size 384``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from scratchrnn.apps.bench.harness import cpu_name, interleaved_samples, load_average
from scratchrnn.apps.bench.peers import fma_peak
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.train import Trainer

TWIN = "torch.nn.RNN + autograd + torch.optim"


def throughput(config: TrainConfig, rounds: int, steps: int) -> dict:
    """chars/s of ours and of the torch-built twin, in alternating blocks of ``steps`` steps (after
    two untimed warm-up blocks each, as the harness does)."""
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {
            backend: Trainer(dataclasses.replace(config, backend=backend, out=f"{tmp}/{backend}"))
            for backend in ("scratch", "torch")
        }
        states = {backend: {"k": 0, "h": None} for backend in trainers}
        chars = config.batch_size * config.seq_len

        def block(backend: str) -> None:
            trainer, state = trainers[backend], states[backend]
            for _ in range(steps):
                x, y = trainer.batches[state["k"]]
                loss, state["h"] = trainer.train_step(x, y, config.lr, state["h"])
                loss.item()  # as the loop does, for the progress bar and the NaN check
                state["k"] = (state["k"] + 1) % len(trainer.batches)

        # two backends in one cell: the harness alternates which goes first (ABBA)
        seconds = interleaved_samples([{b: partial(block, b) for b in trainers}], rounds)
    samples = {backend: [steps * chars / s for s in seconds[backend]] for backend in trainers}
    model = trainers["scratch"].model.config
    ratios = [a / b for a, b in zip(samples["scratch"], samples["torch"], strict=True)]
    return {
        "ours_median": statistics.median(samples["scratch"]),
        "ours_best": max(samples["scratch"]),
        "torch_median": statistics.median(samples["torch"]),
        "torch_best": max(samples["torch"]),
        "speedup_median": statistics.median(ratios),
        "speedup_min": min(ratios),
        "speedup_max": max(ratios),
        "rounds": rounds,
        "steps": steps,
        "step_flops": step_flops(model.vocab_size, model.input_size, config),
        "fma_peak": fma_peak(torch.get_num_threads()),
    }


def step_flops(V: int, E: int, c: TrainConfig) -> int:
    """The GEMM flops of one training step: 3× each forward GEMM (the backward does two more of
    each shape), over the RNN's layers and the output layer (H → V)."""
    rows, H = c.batch_size * c.seq_len, c.hidden_size
    forward = sum(2 * rows * H * ((E if layer == 0 else H) + H) for layer in range(c.num_layers))
    return 3 * (forward + 2 * rows * H * V)


def quality(config: TrainConfig, seconds: float) -> dict:
    """A full training run of each backend with ``seconds`` of budget; validation losses."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("scratch", "torch"):
            run = dataclasses.replace(config, backend=backend, out=f"{tmp}/{backend}", time_budget=seconds,
                                      max_steps=None, progress=False)
            t0 = time.perf_counter()
            result = Trainer(run).run()
            out[backend] = {
                "val_loss": result.val_loss, "val_bpc": result.val_bpc, "steps": result.step,
                "train_seconds": result.elapsed, "wall_seconds": time.perf_counter() - t0,
                "chars_per_s": result.chars_per_s,
            }
    return out


def report(config: TrainConfig, speed: dict, qual: dict | None, command: str) -> str:
    c = config
    chars = c.batch_size * c.seq_len
    lines = [
        "# Language model: ours vs the same model on torch.nn.RNN + autograd + torch.optim",
        "",
        f"Generated by `{command}` on {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average before/after: {speed['load_before']} → "
        f"{speed['load_after']}.",
        "",
        f"Model: CharRNN, V = 65, E = {c.embedding_dim}, H = {c.hidden_size}, L = {c.num_layers}; "
        f"batches N = {c.batch_size} streams × T = {c.seq_len} steps; {c.optimizer}, clip {c.clip}.",
        "Ours: scratchrnn.RNN + hand-written embedding/output/softmax-CE backward + scratchrnn.core.optim. "
        "Theirs: nn.Embedding + nn.RNN + nn.Linear + F.cross_entropy + autograd + torch.optim + "
        "torch.nn.utils.clip_grad_norm_.",
        "",
        f"## Training throughput ({speed['rounds']} alternating rounds of {speed['steps']} steps)",
        "",
        "| | median chars/s | best chars/s |",
        "|---|---:|---:|",
        f"| ours (scratchrnn) | {speed['ours_median']:,.0f} | {speed['ours_best']:,.0f} |",
        f"| {TWIN} | {speed['torch_median']:,.0f} | {speed['torch_best']:,.0f} |",
        "",
        f"Speed-up, median of per-round ratios: **{speed['speedup_median']:.2f}×** "
        f"(range {speed['speedup_min']:.2f}–{speed['speedup_max']:.2f}).",
        "",
        _peak_line(speed, chars),
    ]
    if qual:
        lines += [
            "",
            f"## Validation loss after a {config.time_budget:g} s budget (one run each)",
            "",
            "| | val loss (nats/char) | bits/char | steps | chars/s | wall (s) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for backend, name in (("scratch", "ours (scratchrnn)"), ("torch", TWIN)):
            q = qual[backend]
            lines.append(
                f"| {name} | {q['val_loss']:.4f} | {q['val_bpc']:.4f} | {q['steps']} | "
                f"{q['chars_per_s']:,.0f} | {q['wall_seconds']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def _peak_line(speed: dict, chars: int) -> str:
    """Ours as GFLOP/s and as a share of the FMA peak measured with the same threads."""
    rate = speed["ours_median"] / chars * speed["step_flops"]
    gflop = speed["step_flops"] / 1e9
    return (f"Ours at the median: {rate / 1e9:.0f} GFLOP/s of GEMM work ({gflop:.1f} GFLOP per step), "
            f"**{rate / speed['fma_peak']:.0%}** of the FMA peak measured now with the same "
            f"threads ({speed['fma_peak'] / 1e9:.0f} GFLOP/s, `scratchrnn.apps.bench.peers.fma_peak`).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12, help="alternating timed rounds")
    parser.add_argument("--steps", type=int, default=8, help="training steps per round and model")
    parser.add_argument(
        "--quality", type=float, default=0.0, metavar="SECONDS",
        help="also train each model this many seconds; compare val loss (0: skip)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/LM_RESULTS.md"), help="the report")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    for flag, value in zip(rest[::2], rest[1::2], strict=True):
        name = flag.lstrip("-").replace("-", "_")
        if name not in fields:
            parser.error(f"unknown setting {flag}")
        overrides[name] = type(getattr(TrainConfig(), name) or 0)(value)
    if overrides.get("cell", "rnn") != "rnn":  # the report's twin is nn.RNN
        parser.error(f"this benchmark compares the rnn cell with nn.RNN, got --cell {overrides['cell']}")
    # scratchrnn train's model but for its cell: the tanh RNN, whose twin is nn.RNN
    config = dataclasses.replace(TrainConfig(), **{"cell": "rnn", **overrides})
    command = "python benchmarks/lm_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    before = load_average()
    speed = throughput(config, args.rounds, args.steps)
    qual = quality(config, args.quality) if args.quality else None
    if qual:
        config = dataclasses.replace(config, time_budget=args.quality)
    speed.update(load_before=before, load_after=load_average())
    text = report(config, speed, qual, command.strip())
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
