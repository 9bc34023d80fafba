"""Each option of docs/options.md against the way users build it today: a Python loop of the cell
on autograd (for layer norm, nn.LayerNorm inside that loop), and that loop under torch.compile.

Forward + backward of one layer, float32, padded (T, N, D) input, in training (masks drawn each
call), interleaved rounds, medians; the compile time of the loop is reported apart (its first call
minus a steady one). Also each option's overhead over the plain scratchrnn.RNN.

    flock /tmp/scratchrnn-cpu.lock .venv/bin/python benchmarks/options_speed.py --compile \
        --out benchmarks/OPTIONS_RESULTS.md

It prints a markdown table (and writes it to --out, with the command that made it).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import scratchrnn
from scratchrnn.apps.bench.harness import cpu_name, load_average

SHAPES = [(100, 32, 64, 128), (100, 32, 128, 256), (50, 64, 256, 512)]  # (T, N, D, H)
OPTIONS = {"plain": {}, "gelu": {"nonlinearity": "gelu"}, "layer_norm": {"layer_norm": True},
           "recurrent_dropout": {"recurrent_dropout": 0.25}, "weight_drop": {"weight_drop": 0.5},
           "zoneout": {"zoneout": 0.1},
           "all four": {"layer_norm": True, "recurrent_dropout": 0.25, "weight_drop": 0.5, "zoneout": 0.1}}


def autograd_loop(m: scratchrnn.RNN, ln: nn.LayerNorm | None):
    """The same one-layer model as ``m``, as users write it today: a step loop on autograd."""
    act = F.gelu if m.nonlinearity == "gelu" else torch.tanh

    def run(x: torch.Tensor) -> torch.Tensor:
        N, H = x.shape[1], m.hidden_size
        W_hh = m.weight_hh_l0
        if m.weight_drop:
            W_hh = W_hh * torch.empty_like(W_hh).bernoulli_(1 - m.weight_drop) / (1 - m.weight_drop)
        mask = x.new_empty(N, H).bernoulli_(1 - m.recurrent_dropout) / (1 - m.recurrent_dropout) \
            if m.recurrent_dropout else None
        xp = F.linear(x, m.weight_ih_l0, m.bias_ih_l0)  # the projection hoisted, as ours
        h, outs = x.new_zeros(N, H), []
        for xp_t in xp:
            a = xp_t + F.linear(h if mask is None else h * mask, W_hh, m.bias_hh_l0)
            h_new = act(ln(a) if ln is not None else a)
            if m.zoneout:
                z = torch.empty_like(h).bernoulli_(m.zoneout)
                h_new = z * h + (1 - z) * h_new
            h = h_new
            outs.append(h)
        return torch.stack(outs)

    return run


def seconds(fn, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one tiny shape, two rounds (a smoke test)")
    p.add_argument("--compile", action="store_true", help="also time the loop under torch.compile")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", help="also write the report (markdown) to this file")
    args = p.parse_args(argv)
    lines = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    shapes, rounds = ([(5, 2, 3, 4)], 2) if args.quick else (SHAPES, args.rounds)
    say("# Options: scratchrnn against the autograd loop users write today")
    say()
    say("`python benchmarks/options_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`")
    say()
    say(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, load {load_average()} "
        f"(before). Forward + backward of one layer, float32, training mode; medians of {rounds} "
        "interleaved rounds.")
    say()
    say("| option | T, N, D, H | scratchrnn ms | autograd loop ms | loop ÷ ours | compiled loop ms "
          "| compiled ÷ ours | compile s | ours ÷ plain ours |")
    say("|---|---|---|---|---|---|---|---|---|")
    for T, N, D, H in shapes:
        plain_ms = None
        for name, options in OPTIONS.items():
            torch.manual_seed(0)
            m = scratchrnn.RNN(D, H, **options).train()
            ln = nn.LayerNorm(H) if options.get("layer_norm") else None
            loop = autograd_loop(m, ln)
            x = torch.randn(T, N, D)

            def ours(m=m, x=x):
                m(x)[0].sum().backward()

            def theirs(fn=loop, x=x):
                fn(x).sum().backward()

            runs = {"ours": ours, "loop": theirs}
            compile_s = None
            if args.compile:
                torch._dynamo.reset()  # a fresh compile: else Dynamo reuses an earlier option's graph
                compiled = torch.compile(loop)
                start = time.perf_counter()
                theirs(compiled)
                first = time.perf_counter() - start
                runs["compiled"] = lambda c=compiled: theirs(c)
            for fn in runs.values():  # warm-up: first-call costs are not the steady state
                fn()
            samples: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(rounds):  # interleaved: a drift in the machine's speed hits all alike
                for k, fn in runs.items():
                    samples[k] += seconds(fn, 1)
            ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
            if args.compile:
                compile_s = first - ms["compiled"] / 1e3
            plain_ms = ms["ours"] if name == "plain" else plain_ms
            compiled_cells = (f"{ms['compiled']:.2f} | {ms['compiled'] / ms['ours']:.2f} | {compile_s:.1f}"
                              if args.compile else "— | — | —")
            say(f"| {name} | {T}, {N}, {D}, {H} | {ms['ours']:.2f} | {ms['loop']:.2f} | "
                f"{ms['loop'] / ms['ours']:.2f} | {compiled_cells} | {ms['ours'] / plain_ms:.2f} |")
    say()
    say(f"Load average after: {load_average()}.")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
