"""The ``scratchrnn`` command line: a thin shell over the library.

Each subcommand has an ``_add_<name>`` function that declares its flags and a ``_cmd_<name>``
function that calls the library. Errors a user can cause (bad paths, bad flags, bad files) arrive
as ValueError or OSError from the library and leave as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from pathlib import Path

import torch

from scratchrnn.apps import inspect as inspect_page
from scratchrnn.core.modules import RNN
from scratchrnn.lm.distributed import raised_on_every_rank

log = logging.getLogger("scratchrnn")


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run a 2-layer RNN forward and backward and compare it with torch.nn.RNN",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seq-len", type=int, default=20, help="T, time steps")
    p.add_argument("--batch-size", type=int, default=4, help="N, sequences")
    p.add_argument("--input-size", type=int, default=8, help="D, input features")
    p.add_argument("--hidden-size", type=int, default=16, help="H, hidden units")
    p.add_argument("--num-layers", type=int, default=2, help="stacked layers")
    p.add_argument("--seed", type=int, default=0, help="random seed")


def _cmd_demo(args) -> None:
    T, N, D = args.seq_len, args.batch_size, args.input_size
    H, L = args.hidden_size, args.num_layers
    torch.manual_seed(args.seed)
    ours = RNN(D, H, num_layers=L, dtype=torch.float64)
    theirs = torch.nn.RNN(D, H, num_layers=L, dtype=torch.float64)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, N, D, dtype=torch.float64, requires_grad=True)
    results = {}
    for name, model in (("scratchrnn.RNN", ours), ("torch.nn.RNN", theirs)):
        output, h_n = model(x)
        loss = output.square().sum() + h_n.sum()
        grads = torch.autograd.grad(loss, [x, *model.parameters()])
        results[name] = (output, h_n, grads)
    (o1, h1, g1), (o2, h2, g2) = results.values()
    print(f"input x: {tuple(x.shape)} (T, N, D)   {L}-layer RNN, H = {H}, float64")
    print(f"output:  {tuple(o1.shape)} (T, N, H)   h_n: {tuple(h1.shape)} (layers, N, H)")
    print(f"max |difference| from torch.nn.RNN:  output {(o1 - o2).abs().max():.2e}   "
          f"h_n {(h1 - h2).abs().max():.2e}")
    names = ["input", *(n for n, _ in ours.named_parameters())]
    for name, a, b in zip(names, g1, g2, strict=True):
        print(f"  d{name:<16} {tuple(a.shape)!s:<10} max |difference| {(a - b).abs().max():.2e}")


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time scratchrnn.RNN against torch.nn.RNN, the naive loop and the GEMM floor",
        description="Times forward and forward+backward of four variants in interleaved rounds, "
        "measures the peak memory of a training step, and prints a markdown report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="tiny shapes and 2 rounds: a smoke test")
    p.add_argument("--out", type=Path, default=None, help="also write the report to this file")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts")
    # SUPPRESS: these defaults depend on --quick, so the help states them itself
    p.add_argument(
        "--rounds", type=int, default=argparse.SUPPRESS, help="timed rounds (default: 7; 2 with --quick)"
    )
    p.add_argument(
        "--shape", action="append", default=argparse.SUPPRESS, metavar="T,N,D,H,L[,bi]",
        help="benchmark only this shape, repeatable (default: the issue's grid; tiny ones with --quick)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")


def _cmd_bench(args) -> None:
    from scratchrnn.apps.bench import rnn as bench

    if args.out is not None and not args.out.parent.is_dir():
        raise FileNotFoundError(f"no directory {str(args.out.parent)!r} to write {args.out.name!r} in")
    specs, rounds_flag = getattr(args, "shape", []), getattr(args, "rounds", None)
    if specs:
        shapes = [bench.Shape.parse(spec) for spec in specs]
    else:
        shapes = bench.QUICK_SHAPES if args.quick else bench.SHAPES
    rounds = rounds_flag if rounds_flag is not None else (2 if args.quick else 7)
    memory_shape = bench.QUICK_MEMORY_SHAPE if args.quick else bench.MEMORY_SHAPE
    command = ["scratchrnn bench"]
    command += ["--quick"] if args.quick else []
    command += ["--threads", *map(str, args.threads)] if args.threads != [1, 2] else []
    command += ["--rounds", str(rounds_flag)] if rounds_flag is not None else []
    command += [f"--shape {spec}" for spec in specs]
    command += ["--no-memory"] if args.no_memory else []
    command += ["--out", str(args.out)] if args.out is not None else []
    report = bench.run_benchmark(
        shapes, args.threads, rounds, None if args.no_memory else memory_shape,
        command=" ".join(command), progress=log.info,
    )
    print(report)
    if args.out is not None:
        args.out.write_text(report)
        log.info("wrote %s", args.out)


def _add_lab(sub) -> None:
    from scratchrnn.apps.lab import EXPERIMENTS

    listing = "; ".join(f"{name}: {what}" for name, what in EXPERIMENTS.items())
    p = sub.add_parser(
        "lab",
        help="run an experiment that answers one of the tutorial's questions (plots + numbers)",
        description=f"Experiments: {listing}. 'all' runs every one and regenerates the plots and "
        "numbers of docs/tutorial.md (run it from the repository root).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("name", choices=[*EXPERIMENTS, "all"], help="the experiment, or all of them")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for smoke tests")
    p.add_argument("--long", action="store_true", help="all: also the long experiments (longadding)")
    p.add_argument(
        "--out", type=Path, default=argparse.SUPPRESS,
        help="run folder (default: runs/lab/NAME; for all: docs/img, one folder per experiment)",
    )


def _cmd_lab(args) -> None:
    from scratchrnn.apps import lab

    if args.name == "all":
        out = getattr(args, "out", Path("docs/img"))
        results = lab.run_all(out, quick=args.quick, progress=log.info, long=args.long)
        for result, seconds in results:
            print(result.summary, f"\n({result.name}: {seconds:.1f} s, files in {result.out})\n")
        print(f"lab all: {sum(s for _, s in results):.1f} s; index in {out / 'lab_all.md'}")
        return
    out = getattr(args, "out", Path("runs/lab") / args.name)
    result = lab.run(args.name, out, quick=args.quick)
    print(result.summary)
    print("\nwrote " + ", ".join(str(f) for f in result.files))


def _add_train(sub) -> None:
    from scratchrnn.lm.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train the character-level language model (CharRNN) on a text file",
        description="Train a CharRNN with truncated BPTT; every gradient and update is hand-written. "
        "The defaults are the best settings found for 180 s on a 2-core CPU. Data-parallel on K "
        "processes: torchrun --nproc_per_node=K -m scratchrnn train ... (same flags; see README).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", default=d.data, help="UTF-8 text file (None: the bundled tiny Shakespeare)")
    g = p.add_argument_group("model")
    g.add_argument("--embedding-dim", type=int, default=d.embedding_dim, help="E; 0 for one-hot input")
    g.add_argument("--hidden-size", type=int, default=d.hidden_size, help="H, hidden units")
    g.add_argument("--num-layers", type=int, default=d.num_layers, help="L, stacked RNN layers")
    g.add_argument("--dropout", type=float, default=d.dropout, help="on every RNN layer's output")
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", default=d.optimizer, help="adam, adamw, sgd or adagrad")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 (AdamW: decoupled)")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD's momentum")
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear warm-up steps")
    g.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio,
                   help="the cosine decays the lr to this fraction of its peak")
    g.add_argument("--clip", type=float, default=d.clip, help="max global gradient norm (0: off)")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="N, parallel streams in all (global): under torchrun each of K processes "
                   "trains on N/K of them (K must divide N); the batch means the same for any K")
    g.add_argument("--seq-len", type=int, default=d.seq_len, help="T, steps of truncated BPTT")
    g.add_argument("--max-steps", type=int, default=d.max_steps, help="stop after N steps (None: no limit)")
    g.add_argument("--time-budget", type=float, default=d.time_budget,
                   help="stop after this many seconds of training and evaluation (0: no limit)")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed")
    g.add_argument("--backend", default=d.backend,
                   help="scratch (ours) or torch (same model: nn.RNN, autograd, torch.optim)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default=d.out, help="run directory")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--force", action="store_true", help="replace a run that --out already holds")
    g.add_argument("--eval-interval", type=int, default=d.eval_interval,
                   help="steps between validation, checkpoint and sample")
    g.add_argument("--eval-streams", type=int, default=d.eval_streams, help="streams when validating")
    g.add_argument("--log-interval", type=int, default=d.log_interval, help="steps between log records")
    g.add_argument("--sample-length", type=int, default=d.sample_length, help="characters per sample")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cpu, or cuda (under torchrun: GPU <local rank> for each process, NCCL between "
                   "them; gloo between CPU processes)")


def _cmd_train(args) -> None:
    from dataclasses import fields

    from scratchrnn.lm import distributed, train

    defaults = train.TrainConfig()
    values = {f.name: getattr(args, f.name) for f in fields(train.TrainConfig) if f.name != "progress"}
    values["progress"] = not args.no_progress
    # Under torchrun, one process per rank joins the group here (without it, a world of one).
    with distributed.launched(args.device) as world:
        if not world.is_main:  # rank 0 reports; the others stay quiet but for their own errors
            logging.getLogger().setLevel(logging.ERROR)
        if args.resume:  # the saved settings, with the flags given on this command line
            changes = {k: v for k, v in values.items() if v != getattr(defaults, k) and k != "out"}
            config = world.on_main(train.resume_config, args.out, **changes)
        else:
            config = train.TrainConfig(**values)
        if config.time_budget == 0:
            config.time_budget = None
        result = train.Trainer(config, resume=args.resume, force=args.force, world=world).run()
    if world.is_main:
        val = "n/a"
        if result.val_loss is not None:
            val = f"{result.val_loss:.4f} nats/char ({result.val_bpc:.4f} bits/char)"
        print(f"step {result.step}, {result.elapsed:.1f} s: train loss {result.train_loss:.4f}, "
              f"val loss {val}, {result.chars_per_s:,.0f} chars/s")
        print(f"checkpoint: {result.checkpoint}")
    if result.interrupted:
        if world.is_main:
            launcher = "torchrun --nproc_per_node=K -m scratchrnn" if world.size > 1 else "scratchrnn"
            print(f"stopped by {result.interrupted}; continue with: {launcher} train --out {config.out} "
                  "--resume", file=sys.stderr)
        raise SystemExit(128 + getattr(signal, result.interrupted))


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate text from a trained language model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint.pt or best.pt of scratchrnn train")
    p.add_argument("--prompt", default="", help="text to start from (empty: a newline)")
    p.add_argument("--length", type=int, default=500, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="< 1: safer text, > 1: wilder")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest only (None: all)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")


def _cmd_sample(args) -> None:
    from scratchrnn.lm.model import generate
    from scratchrnn.lm.train import load_model

    if args.length < 0:
        raise ValueError(f"length must be ≥ 0, got {args.length}")
    model, vocab, _ = load_model(args.checkpoint)
    prompt = args.prompt or ("\n" if "\n" in vocab.stoi else vocab.chars[0])
    prompt_ids = vocab.encode(prompt)
    generator = torch.Generator().manual_seed(args.seed)
    ids = generate(model, prompt_ids, args.length, args.temperature, args.top_k, generator)
    print(args.prompt + vocab.decode(ids))


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="validation loss of a trained language model, in nats/char and bits/char",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint.pt or best.pt of scratchrnn train")
    p.add_argument("--data", default=None,
                   help="evaluate on the last 10%% of this UTF-8 file (None: the checkpoint's own "
                   "validation split)")


def _cmd_eval(args) -> None:
    from scratchrnn.lm.train import evaluate_checkpoint

    loss, count = evaluate_checkpoint(args.checkpoint, args.data)
    source = args.data or "the checkpoint's training text"
    print(f"val loss {loss:.4f} nats/char, {loss / math.log(2):.4f} bits/char "
          f"({count:,} characters: the last 10% of {source})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scratchrnn",
        description="A hand-written Elman RNN: train, sample, evaluate, benchmark, experiment.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(sub)
    _add_bench(sub)
    _add_lab(sub)
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    inspect_page.add_parser(sub)
    return parser


_COMMANDS = {"demo": _cmd_demo, "bench": _cmd_bench, "lab": _cmd_lab}
_COMMANDS.update(train=_cmd_train, sample=_cmd_sample, eval=_cmd_eval)
_COMMANDS.update(inspect=inspect_page.main)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s"
    )
    try:
        _COMMANDS[args.command](args)
    except (ValueError, OSError) as err:
        rank = os.environ.get("RANK", "0")  # set by torchrun
        if rank != "0" and raised_on_every_rank(err):
            return 2  # rank 0 reports it
        where = "" if rank == "0" else f" (rank {rank})"
        print(f"scratchrnn {args.command}{where}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
