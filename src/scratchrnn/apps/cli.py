"""The ``scratchrnn`` command line: a thin shell over the library.

Each subcommand has an ``_add_<name>`` function that declares its flags and names, with
``set_defaults(run=...)``, the ``_cmd_<name>`` function that calls the library: an application
adds its subcommand that way and one line in :func:`build_parser` (``inspect`` is one). The
flags of ``train`` are generated from the fields of
:class:`~scratchrnn.lm.config.TrainConfig` (name, type, default, help, group, choices), with no
default of their own: a flag is "given" when it is on the command line, whatever its value.

Errors a user can cause (bad paths, bad flags, bad files) arrive as ValueError or OSError from
the library and leave as one line on stderr and exit status 2; SIGINT or SIGTERM before training
begins leaves as one line and status 130 or 143 (during training the loop saves a checkpoint first).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import types
import typing
from pathlib import Path

import torch

from scratchrnn.apps import inspect as inspect_page
from scratchrnn.apps.helpformat import DefaultsHelpFormatter
from scratchrnn.core.modules import RNN
from scratchrnn.lm.config import MAX_SAMPLE_LENGTH, SEED_MAX, TrainConfig, check_count
from scratchrnn.lm.distributed import (
    DEFAULT_TIMEOUT,
    STOP_SIGNALS,
    PeerLost,
    raised_on_every_rank,
    watch_stop_signals,
)
from scratchrnn.lm.schedule import SCHEDULES

log = logging.getLogger("scratchrnn")

# The smallest sampling temperature: below it the logits divided by it overflow float32, and
# sampling is already greedy above it.
MIN_TEMPERATURE = 1e-4


def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run a 2-layer RNN forward and backward and compare it with torch.nn.RNN",
        formatter_class=DefaultsHelpFormatter,
    )
    p.set_defaults(run=_cmd_demo)
    p.add_argument("--seq-len", type=int, default=20, help="T, time steps")
    p.add_argument("--batch-size", type=int, default=4, help="N, sequences")
    p.add_argument("--input-size", type=int, default=8, help="D, input features")
    p.add_argument("--hidden-size", type=int, default=16, help="H, hidden units")
    p.add_argument("--num-layers", type=int, default=2, help="stacked layers")
    p.add_argument("--seed", type=int, default=0, help="random seed")


def _cmd_demo(args) -> None:
    for name in ("seq_len", "batch_size", "input_size", "hidden_size", "num_layers"):
        check_count(name, getattr(args, name))
    _check_seed(args.seed)
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
        help="time scratchrnn.RNN against torch.nn.RNN, the naive loop and the GEMM floor, "
        "scratchrnn.GRU against torch.nn.GRU, and both against their peers",
        description="Times forward and forward+backward of each variant in interleaved rounds, "
        "measures the peak memory of a training step, times the peers (JAX, torch.compile, oneDNN), "
        "checks the project's targets and prints a markdown report.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.set_defaults(run=_cmd_bench)
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes and 2 rounds: a smoke test that says what ran, with no verdicts")
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
    p.add_argument("--cells", nargs="+", choices=["rnn", "gru"], default=["rnn", "gru"],
                   help="the rows to run: the RNN's, the GRU's (scratchrnn.GRU vs nn.GRU), or both")
    p.add_argument("--targets", type=Path, default=argparse.SUPPRESS, metavar="TOML",
                   help="the project's goals that the report checks (default: benchmarks/targets.toml "
                   "of the repository, when run from its root; none otherwise)")


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
    targets_path = getattr(args, "targets", None)
    if targets_path is not None and not targets_path.is_file():
        raise FileNotFoundError(f"no targets file {str(targets_path)!r}")
    if targets_path is None and bench.TARGETS_FILE.is_file():
        targets_path = bench.TARGETS_FILE
    targets = bench.load_targets(targets_path) if targets_path is not None else None
    command = ["scratchrnn bench"]
    command += ["--quick"] if args.quick else []
    command += ["--threads", *map(str, args.threads)] if args.threads != [1, 2] else []
    command += ["--rounds", str(rounds_flag)] if rounds_flag is not None else []
    command += [f"--shape {spec}" for spec in specs]
    command += ["--no-memory"] if args.no_memory else []
    command += ["--cells", *args.cells] if args.cells != ["rnn", "gru"] else []
    command += ["--targets", str(args.targets)] if getattr(args, "targets", None) is not None else []
    command += ["--out", str(args.out)] if args.out is not None else []
    report = bench.run_benchmark(
        shapes, args.threads, rounds, None if args.no_memory else memory_shape,
        command=" ".join(command), progress=log.info, targets=targets, cells=args.cells, smoke=args.quick,
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
        formatter_class=DefaultsHelpFormatter,
    )
    p.set_defaults(run=_cmd_lab)
    p.add_argument("name", choices=[*EXPERIMENTS, "all"], help="the experiment, or all of them")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, for smoke tests")
    p.add_argument("--long", action="store_true", help="all: also the long experiments (longadding)")
    p.add_argument(
        "--out", type=Path, default=argparse.SUPPRESS,
        help="run folder (default: runs/lab/NAME; for all: docs/img, one folder per experiment, "
        "and the numbers the tutorials and README quote refreshed; with --quick: runs/lab)",
    )


def _cmd_lab(args) -> None:
    from scratchrnn.apps import lab

    if args.name == "all":
        out = getattr(args, "out", Path("runs/lab" if args.quick else "docs/img"))
        results = lab.run_all(out, quick=args.quick, progress=log.info, long=args.long)
        for result, seconds in results:
            print(result.summary, f"\n({result.name}: {seconds:.1f} s, files in {result.out})\n")
        print(f"lab all: {sum(s for _, s in results):.1f} s; index in {out / 'lab_all.md'}")
        return
    out = getattr(args, "out", Path("runs/lab") / args.name)
    lab.check_quick_out(out.parent, args.quick, args.name)
    result = lab.run(args.name, out, quick=args.quick)
    # Into docs/img/NAME (as for the long experiment): the tutorials' marked numbers follow.
    refreshed = lab.prose.refresh_files(out.parent)
    print(result.summary)
    print("\nwrote " + ", ".join(str(f) for f in [*result.files, *refreshed]))


def _check_seed(seed: int) -> None:
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"--seed must be an integer from 0 to {SEED_MAX}, got {seed}")


def _flag_type(annotation) -> type:
    """The type a flag parses to: ``int`` for ``int | None``, and so on."""
    if isinstance(annotation, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def _add_config_flags(p: argparse.ArgumentParser, config_class) -> dict:
    """One flag per field of ``config_class``, in its declared group, default SUPPRESS: only the
    flags given on the command line appear in the parsed namespace. Returns the groups by name."""
    hints = typing.get_type_hints(config_class)
    groups: dict = {}
    for f in dataclasses.fields(config_class):
        group = groups.get(f.metadata["group"]) or groups.setdefault(
            f.metadata["group"], p.add_argument_group(f.metadata["group"]))
        choices = f.metadata["choices"]
        help = f.metadata["help"] + (f"; one of {', '.join(choices)}" if choices else "")
        kind = _flag_type(hints[f.name])
        if kind is bool:  # a switch that turns the default off (or on)
            flag = f"--{'no-' if f.default else ''}{f.name.replace('_', '-')}"
            group.add_argument(flag, dest=f.name, action="store_false" if f.default else "store_true",
                               default=argparse.SUPPRESS, help=f"do not {help}" if f.default else help)
        else:
            shown = "" if f.default is None else f" (default: {f.default})"  # the help says what None is
            group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind,
                               default=argparse.SUPPRESS, help=help + shown)
    return groups


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the character-level language model (CharRNN) on a text file",
        description="Train a CharRNN with truncated BPTT; every gradient and update is hand-written. "
        "The defaults are the best settings found for 180 s on a 2-core CPU. Data-parallel on K "
        "processes: torchrun --nproc_per_node=K -m scratchrnn train ... (same flags; see README). "
        "With --resume, the flags given must agree with the saved run but for the stopping rule "
        "and the output's cadence. --max-steps given without --time-budget is the only limit (the "
        "default time budget is off).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.set_defaults(run=_cmd_train)
    g = _add_config_flags(p, TrainConfig)["output"]
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    g.add_argument("--schedule", default="keep", choices=SCHEDULES,
                   help="with --resume and a later end (--time-budget, --max-steps): keep the learning-rate "
                   "schedule (past its end, its floor), or extend its cosine over the new end (train longer)")
    g.add_argument("--force", action="store_true",
                   help="replace a run that --out already holds (kept until the new one has a checkpoint)")
    g.add_argument("--auto-resume", action="store_true",
                   help="continue the run in --out if it holds one (the flags given must agree with it as "
                   "for --resume), else start it; a finished run says so and exits 0: the one command "
                   "line for torchrun --max-restarts, requeued jobs and retry loops")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="cpu, or cuda (under torchrun: GPU <local rank> for each process, NCCL between "
                   "them; gloo between CPU processes)")
    g.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="under torchrun: how long joining the process group and each collective wait for "
                   "the other processes; a hung or vanished peer then ends this process with one error, "
                   "and torchrun's restart takes over")


def _read_run(into: dict, out: str, given: dict) -> TrainConfig:
    """The settings to resume the run in ``out`` with; what was read is left in ``into["run"]``."""
    from scratchrnn.lm.rundir import read_run

    into["run"] = read_run(out, **given)
    return into["run"].config


def _cmd_train(args) -> None:
    from scratchrnn.lm import distributed, train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if "max_steps" in given and "time_budget" not in given:
        # The steps asked for, all of them: not cut short by the default (or saved) time budget.
        given["time_budget"] = 0.0
    # Under torchrun, one process per rank joins the group here (without it, a world of one).
    if args.auto_resume and (args.resume or args.force):
        raise ValueError("--auto-resume excludes --resume and --force: it chooses between them")
    with distributed.launched(args.device, args.dist_timeout) as world:
        if not world.is_main:  # rank 0 reports; the others stay quiet but for their own errors
            logging.getLogger().setLevel(logging.ERROR)
        read: dict = {}  # rank 0's SavedRun: the Trainer restores from it rather than read it again
        if args.auto_resume:  # resume, start, or nothing to do: rank 0 reads --out and decides
            mode, config, note = world.on_main(train.auto_resume, given, read)
            if mode == "finished":
                if world.is_main:
                    print(note)
                return
            args.resume, args.force = mode == "resume", mode == "force"
        elif args.resume:  # the saved settings, with the flags given on this command line
            out = given.pop("out", TrainConfig.out)
            config = world.on_main(_read_run, read, out, given)  # only the settings go to the ranks
        else:
            config = TrainConfig(**given)
        # popped, not kept: the checkpoint's tensors are not held for the rest of the run
        trainer = train.Trainer(config, resume=args.resume, force=args.force, world=world,
                                saved=read.pop("run", None),
                                # --auto-resume starting a run: nothing to re-plan yet
                                schedule="keep" if args.auto_resume and not args.resume else args.schedule)
        result = trainer.run()
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
            print(f"stopped by {result.interrupted}; continue with: {launcher} train --out "
                  f"{Path(result.checkpoint).parent} --resume", file=sys.stderr)
        raise SystemExit(128 + getattr(signal, result.interrupted))


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="generate text from a trained language model",
        formatter_class=DefaultsHelpFormatter,
    )
    p.set_defaults(run=_cmd_sample)
    p.add_argument("--checkpoint", required=True, help="a checkpoint.pt or best.pt of scratchrnn train")
    p.add_argument("--prompt", default="", help="text to start from (empty: a newline, if the vocabulary "
                   "has one, else its first character)")
    p.add_argument("--length", type=int, default=500, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8,
                   help=f"< 1: safer text, > 1: wilder; 0: greedy (the likeliest character), else from "
                   f"{MIN_TEMPERATURE:g}")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest only (default: all)")
    p.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")


def _cmd_sample(args) -> None:
    from scratchrnn.lm.checkpoint import load_model
    from scratchrnn.lm.model import generate

    if not 0 <= args.length <= MAX_SAMPLE_LENGTH:
        raise ValueError(f"length must be ≥ 0 and at most {MAX_SAMPLE_LENGTH:,}, got {args.length:,}")
    if args.temperature > 0 and not args.temperature >= MIN_TEMPERATURE:
        raise ValueError(f"temperature must be 0 (greedy) or ≥ {MIN_TEMPERATURE:g} (below, the logits "
                         f"divided by it overflow float32, and sampling is greedy already), "
                         f"got {args.temperature:g}")
    _check_seed(args.seed)
    model, vocab, _ = load_model(args.checkpoint)
    prompt = args.prompt or vocab.start
    prompt_ids = vocab.encode(prompt)
    generator = torch.Generator().manual_seed(args.seed)
    ids = generate(model, prompt_ids, args.length, args.temperature, args.top_k, generator)
    print(args.prompt + vocab.decode(ids))


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="validation loss of a trained language model, in nats/char and bits/char",
        formatter_class=DefaultsHelpFormatter,
    )
    p.set_defaults(run=_cmd_eval)
    p.add_argument("--checkpoint", required=True, help="a checkpoint.pt or best.pt of scratchrnn train")
    p.add_argument("--data", default=None,
                   help="evaluate on the last 10%% of this UTF-8 file (default: the checkpoint's own "
                   "validation split)")
    p.add_argument("--window", type=int, default=None,
                   help="the loss over consecutive windows of this many characters, each read "
                   "from a zero state (nanoGPT's statistic; default: the state carried through the text)")


def _cmd_eval(args) -> None:
    from scratchrnn.lm.evaluation import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.data, window=args.window)
    source = args.data or "the checkpoint's training text"
    how = f", in windows of {args.window} from a zero state" if args.window else ""
    print(f"val loss {result.loss:.4f} nats/char, {result.bits:.4f} bits/char "
          f"({result.chars:,} characters: the last 10% of {source}{how})")


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
    parser.commands = sub.choices  # each subcommand's parser, for its own usage line
    return parser




class _Stopped(BaseException):
    """A stop signal before the training loop took them over (it saves a checkpoint instead)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame) -> None:
    raise _Stopped(signum)


def main(argv: list[str] | None = None) -> int:
    previous = {}
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: the signals stay as they are
            previous[sig] = signal.signal(sig, _stop)
    rank = os.environ.get("RANK", "0")
    try:
        # a signal obeyed within seconds even while the main thread waits in gloo's C code
        with watch_stop_signals("scratchrnn" + ("" if rank == "0" else f" (rank {rank})")):
            return _main(argv)
    except (_Stopped, KeyboardInterrupt) as stop:  # before a command began: nothing to report but that
        signum = stop.signum if isinstance(stop, _Stopped) else signal.SIGINT
        print(f"scratchrnn: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's usage, not the top level's: it is the one that knows the flags
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s"
    )
    rank = os.environ.get("RANK", "0")  # set by torchrun
    where = "" if rank == "0" else f" (rank {rank})"
    try:
        args.run(args)  # what the subcommand's parser named (set_defaults)
    except (ValueError, OSError) as err:
        if rank != "0" and raised_on_every_rank(err):
            return 2  # rank 0 reports it
        print(f"scratchrnn {args.command}{where}: error: {err}", file=sys.stderr)
        return 2
    except PeerLost as err:  # status 1: torchrun restarts the job (it names the rank itself)
        print(f"scratchrnn {args.command}: error: {err}", file=sys.stderr)
        return 1
    except (_Stopped, KeyboardInterrupt) as stop:
        signum = stop.signum if isinstance(stop, _Stopped) else signal.SIGINT
        print(f"scratchrnn {args.command}{where}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
