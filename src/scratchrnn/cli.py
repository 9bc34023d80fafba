"""The ``scratchrnn`` command line: a thin shell over the library.

Each subcommand has an ``_add_<name>`` function that declares its flags and a ``_cmd_<name>``
function that calls the library. Errors a user can cause (bad paths, bad flags, bad files) arrive
as ValueError or OSError from the library and leave as one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from scratchrnn.rnn import RNN

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
    )  # fmt: skip
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")


def _cmd_bench(args) -> None:
    from scratchrnn import bench

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
    )  # fmt: skip
    print(report)
    if args.out is not None:
        args.out.write_text(report)
        log.info("wrote %s", args.out)


def _add_lab(sub) -> None:
    from scratchrnn.lab import EXPERIMENTS

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
    p.add_argument(
        "--out", type=Path, default=argparse.SUPPRESS,
        help="run folder (default: runs/lab/NAME; for all: docs/img, one folder per experiment)",
    )  # fmt: skip


def _cmd_lab(args) -> None:
    from scratchrnn import lab

    if args.name == "all":
        out = getattr(args, "out", Path("docs/img"))
        results = lab.run_all(out, quick=args.quick, progress=log.info)
        for result, seconds in results:
            print(result.summary, f"\n({result.name}: {seconds:.1f} s, files in {result.out})\n")
        print(f"lab all: {sum(s for _, s in results):.1f} s; index in {out / 'lab_all.md'}")
        return
    out = getattr(args, "out", Path("runs/lab") / args.name)
    result = lab.run(args.name, out, quick=args.quick)
    print(result.summary)
    print("\nwrote " + ", ".join(str(f) for f in result.files))


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
    return parser


_COMMANDS = {"demo": _cmd_demo, "bench": _cmd_bench, "lab": _cmd_lab}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s"
    )
    try:
        _COMMANDS[args.command](args)
    except (ValueError, OSError) as err:
        print(f"scratchrnn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
