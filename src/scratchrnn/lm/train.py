"""Training the character-level language model: the loop.

The loop is truncated BPTT over contiguous streams (:class:`scratchrnn.lm.data.StreamBatches`): each
step reads a (T, N) chunk, starts from the state the previous chunk ended in (detached, so the
gradient stops there; reset to zeros when a pass over the text starts again), and updates the
parameters once. The learning rate warms up linearly over the first steps, then follows a cosine
from the peak down to ``min_lr_ratio`` × peak at the end of the schedule; the schedule ends at
``max_steps`` or the time budget as the run was created (a time-budgeted run measures its progress
in seconds). A resumed run keeps that schedule: given a later end, it trains on at the floor
learning rate (and says so), unless ``schedule="extend"`` re-plans the cosine over the new end.

:class:`Trainer` keeps the parts apart — :meth:`~Trainer.build` (model and optimizer),
:meth:`~Trainer.train_step`, :meth:`~Trainer.evaluate`, :meth:`~Trainer.save_checkpoint` — and
:meth:`~Trainer.run` strings them together with the progress bar, the log, the evaluations and
the stop conditions. :func:`train` is the one-call entry point. The run directory and its policy
(new, ``force``, ``resume``, the lock) are :mod:`scratchrnn.lm.rundir`'s; the checkpoint format is
:mod:`scratchrnn.lm.checkpoint`'s; a resumed run computes the same losses as an uninterrupted one
(for step-based schedules; a time-budgeted schedule depends on the clock).

Under torchrun the same loop trains data-parallel (see :mod:`scratchrnn.lm.distributed`): each rank
steps on its share of the N streams, ``batch_size`` stays the global N, and only rank 0 touches
files. A checkpoint holds the state of all N streams, so it resumes on any number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from scratchrnn.core import optim
from scratchrnn.lm import distributed
from scratchrnn.lm.checkpoint import (
    check_finite,
    check_resumable,
    load_checkpoint,
    save_checkpoint,
    saved_hidden,
)
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.data import StreamBatches, Vocab, available_memory, load_corpus, resolve_data
from scratchrnn.lm.distributed import STOP_SIGNALS, World
from scratchrnn.lm.evaluation import NATS_TO_BITS, Evaluation, eval_batches, evaluate
from scratchrnn.lm.files import atomic_write, file_version
from scratchrnn.lm.model import CharRNN, TorchCharRNN, cross_entropy, generate
from scratchrnn.lm.plot import loss_png
from scratchrnn.lm.rundir import (
    REPLACED,
    RunDir,
    SavedRun,
    changes_refused,
    read_log,
    read_run,
    refuse,
)
from scratchrnn.lm.schedule import Schedule, is_finished, learning_rate, resumed_schedule

__all__ = [
    "Backend",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "auto_resume",
    "check_memory",
    "make_backend",
    "noted_signals",
    "sample_text",
    "train",
    "training_bytes",
]

log = logging.getLogger(__name__)

# Optimizer state per parameter, in parameter-sized tensors (for the memory estimate).
_OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1, "adagrad": 1}


@dataclass
class TrainResult:
    """What a run reached. ``interrupted`` names the signal that stopped it, if one did."""

    step: int
    elapsed: float  # seconds of training (all sessions of a resumed run)
    train_loss: float  # mean over the last log interval, nats/char
    val_loss: float | None  # nats/char
    chars_per_s: float  # training throughput of this session (evaluations excluded)
    checkpoint: str
    interrupted: str | None = None

    @property
    def val_bpc(self) -> float | None:
        return None if self.val_loss is None else self.val_loss * NATS_TO_BITS


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite."""


def training_bytes(config: TrainConfig, vocab_size: int) -> int:
    """About how many bytes one process needs to train ``config``'s model (float32): weights,
    gradients and optimizer state, plus the activations of a (T, N) chunk kept for BPTT."""
    V, E, H, L = vocab_size, config.embedding_dim, config.hidden_size, config.num_layers
    D = E or V
    G = 3 if config.cell == "gru" else 1  # gates: the recurrent weights have G·H rows
    weights = V * E + G * ((D * H + H * H + 2 * H) + (L - 1) * (2 * H * H + 2 * H)) + H * V + V
    copies = 2 + _OPTIMIZER_STATES.get(config.optimizer, 2)
    activations = config.seq_len * config.batch_size * (3 * H * L + 3 * V + D)
    return 4 * (weights * copies + activations)


def _available_bytes(device: torch.device) -> int | None:
    """Memory free for a new allocation on ``device`` (None: unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return available_memory()


def check_memory(config: TrainConfig, vocab_size: int, world: World) -> None:
    """Refuse, before anything is allocated, a model that cannot fit in this machine's memory."""
    per_process = training_bytes(config, vocab_size)
    sharing = world.local_size if world.device.type == "cpu" else 1  # the processes of one machine
    available = _available_bytes(world.device)
    if available is not None and per_process * sharing > available:
        c = config
        procs = f" in each of {sharing} processes" if sharing > 1 else ""
        raise ValueError(
            f"H = {c.hidden_size} (L = {c.num_layers}, E = {c.embedding_dim}, V = {vocab_size}, "
            f"N = {c.batch_size}, T = {c.seq_len}) needs about {per_process / 1e9:.3g} GB to train{procs} "
            f"(weights, gradients, {c.optimizer} state, activations), and {available / 1e9:.3g} GB "
            f"of memory is available on {world.device.type}"
        )


# --------------------------------------------------------------------------------------------
# Start-up: the run's settings, data and directory; the two backends.
# --------------------------------------------------------------------------------------------


def _resumed_checkpoint(files: RunDir, saved: SavedRun | None) -> dict:
    """The checkpoint of the locked run directory: the one ``saved`` holds if the file is still
    the version it was read from (another process may have carried the run on meanwhile)."""
    if saved is not None and saved.version is not None and saved.version == file_version(files.checkpoint):
        return saved.checkpoint
    ckpt = load_checkpoint(files.checkpoint)
    check_resumable(ckpt, files.checkpoint)  # whole, and its sizes its tensors', before any build
    return ckpt


def _open_run(files: RunDir, world: World, config: TrainConfig, resume: bool, force: bool,
              saved: SavedRun | None, schedule_rule: str = "keep"):
    """Check the settings, read the text (and the checkpoint, unless ``saved`` holds it), open the
    run directory; returns (config with absolute paths, checkpoint or None, corpus, schedule). Run
    by rank 0 alone."""
    config = dataclasses.replace(config, data=resolve_data(config.data), out=os.fspath(files.path))
    config.validate()
    world.check_batch_size(config.batch_size)
    files.check_target()
    ckpt = None
    schedule = Schedule(config.max_steps, config.time_budget)
    if resume:
        files.open("resume")
        ckpt = _resumed_checkpoint(files, saved)
        refuse(changes_refused(ckpt["train_config"], asdict(config)), files.path)
        schedule = resumed_schedule(config, ckpt, files.path, schedule_rule)
    corpus = load_corpus(config.data, Vocab(ckpt["vocab"]) if ckpt else None)
    if resume:  # the text it trained on, or --allow-data-change
        files.check_data_file(ckpt, corpus.data_file, config.allow_data_change)
    StreamBatches(corpus.train, config.batch_size, config.seq_len, "the training split")
    eval_batches(corpus.val, config.eval_streams, config.seq_len, "the validation split")
    check_memory(config, len(corpus.vocab), world)
    if not resume:
        files.open("force" if force else "new")
    return config, ckpt, corpus, schedule


def _started_settings(files: RunDir) -> dict | None:
    """The settings in config.json of a run directory without a checkpoint (None: none readable)."""
    try:
        return json.loads((files.path / "config.json").read_text(encoding="utf-8"))["train"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def auto_resume(given: dict, into: dict) -> tuple[str, TrainConfig, str]:
    """What ``--auto-resume`` does with the run directory ``given["out"]``: (mode, settings, note).

    ``given`` holds the settings named on the command line (all of them from the Python API).

    - ``"resume"``: it holds a checkpoint: the saved settings with ``given`` applied, refused as
      ``--resume`` refuses them; the :class:`SavedRun` read is left in ``into["run"]``.
    - ``"finished"``: that run has reached its end; ``note`` says so, and there is nothing to do.
    - ``"force"``: it holds only the start of a run with the same settings that wrote no checkpoint
      (killed before its first one, as a fault that torchrun restarts from can do): start again,
      its files replaced.
    - ``"new"``: no run there: start one. A run without a checkpoint but with other settings, or
      files of something else, are refused as for a new run.

    Run by rank 0 alone (it reads the files); the same command line thus serves the first start
    and every restart (torchrun ``--max-restarts``, a requeued batch job, a retry loop).
    """
    given = dict(given)
    out = given.pop("out", TrainConfig.out)
    files = RunDir(os.path.abspath(out))
    files.check_target()
    if files.checkpoint.is_file() or (files.path / REPLACED / files.checkpoint.name).is_file():
        saved = read_run(out, **given)
        ckpt = saved.checkpoint
        if is_finished(saved.config, ckpt):
            seconds = float(ckpt["elapsed"])
            return "finished", saved.config, (
                f"the run in {files.path} is finished (step {ckpt['step']}, {seconds:.1f} s of training): "
                "nothing to do; pass a later --max-steps or --time-budget to train it further")
        into["run"] = saved
        return "resume", saved.config, ""
    config = TrainConfig(**given, out=out)
    started = _started_settings(files) if files.holds_run() else None
    if started is not None:
        mine = dataclasses.replace(config, data=resolve_data(config.data), out=os.fspath(files.path))
        differ = changes_refused(started, asdict(mine))
        if differ:
            detail = "; ".join(f"{name}: it has {old!r}, got {new!r}" for name, old, new in differ)
            raise FileExistsError(f"{files.path} holds the start of another run, with no checkpoint yet "
                                  f"({detail}); pass --force to replace it, or choose another --out")
        return "force", config, ""
    return "new", config, ""


@dataclass
class Backend:
    """A model with what trains it: ours (scratch) or torch's own (the baseline)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    clip_fn: Callable[..., Tensor]


def _torch_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def make_backend(config: TrainConfig, vocab_size: int, device: torch.device) -> Backend:
    """The model, its optimizer, loss and clipping, seeded by ``config.seed``; an allocation that
    fails (past :func:`check_memory`'s estimate) is a ValueError that says so."""
    try:
        return _make_backend(config, vocab_size, device)
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "alloc" not in str(err):
            raise
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"not enough memory to build the model (H = {config.hidden_size}): {reason}") \
            from None


def _make_backend(config: TrainConfig, vocab_size: int, device: torch.device) -> Backend:
    c = config
    torch.manual_seed(c.seed)
    args = (vocab_size, c.embedding_dim, c.hidden_size, c.num_layers, c.dropout)
    options = {"cell": c.cell, "nonlinearity": c.nonlinearity, "layer_norm": c.layer_norm,
               "recurrent_dropout": c.recurrent_dropout, "weight_drop": c.weight_drop, "zoneout": c.zoneout}
    if c.backend == "scratch":
        model = CharRNN(*args, **options).to(device)
        optimizer = optim.make_optimizer(c.optimizer, model.parameters(), c.lr, c.weight_decay, c.momentum)
        return Backend(model, optimizer, cross_entropy, optim.clip_grad_norm_)
    # the baseline: the same model and update rules, all from torch
    model = TorchCharRNN(*args, **options).to(device)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
            "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}[c.optimizer]
    extra = {"momentum": c.momentum} if c.optimizer == "sgd" else {}
    optimizer = kind(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, **extra)
    return Backend(model, optimizer, _torch_cross_entropy, torch.nn.utils.clip_grad_norm_)


@contextlib.contextmanager
def noted_signals() -> Iterator[list[int]]:
    """While inside, :data:`STOP_SIGNALS` are noted in the list it yields, not obeyed."""
    received: list[int] = []
    handlers = {}
    for sig in STOP_SIGNALS:
        with contextlib.suppress(ValueError):  # not the main thread: no signal handling
            handlers[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


def _progress_bar(config: TrainConfig, is_main: bool, step: int) -> tqdm:
    """Steps, out of ``max_steps`` when it is set, from ``step`` (where a resumed run starts, so
    that its rate and time left count this session's steps only); the time budget is shown as
    time left (:func:`_progress_note`). On rank 0's terminal only."""
    return tqdm(
        total=config.max_steps or None, initial=step, unit="step",
        disable=None if config.progress and is_main else True, dynamic_ncols=True, leave=False,
    )


def _progress_note(config: TrainConfig, elapsed: float, loss: float, val_loss: float | None,
                   chars_per_s: float) -> str:
    """What the progress bar shows after its count: the losses, the rate, the time budget left."""
    left = f" {max(config.time_budget - elapsed, 0):.0f} s left" if config.time_budget else ""
    val = "-" if val_loss is None else f"{val_loss:.3f}"
    return f"loss {loss:.3f} val {val} {chars_per_s:,.0f} chars/s{left}"


def sample_text(model: nn.Module, vocab: Vocab, length: int, seed: int) -> str:
    """``length`` characters generated from the vocabulary's start character with a seeded
    generator, on the CPU (the generator's device), so that a GPU run writes the same text."""
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    ids = generate(model, vocab.encode(vocab.start), length, generator=torch.Generator().manual_seed(seed))
    return vocab.decode(ids)


def _diverged(files: RunDir, loss_value: float, step: int) -> TrainingDiverged:
    path = files.checkpoint
    if files.committed and path.exists():
        kept = f"the last good checkpoint, {path} (step {load_checkpoint(path)['step']}), is kept"
    else:
        kept = "no checkpoint had been saved yet, so the run directory is left as it was before"
    return TrainingDiverged(f"the training loss became {loss_value} at step {step}; stopped, and {kept}. "
                            "Try a lower learning rate or gradient clipping.")


# --------------------------------------------------------------------------------------------
# The trainer.
# --------------------------------------------------------------------------------------------


@dataclass
class _Session:
    """What one call of :meth:`Trainer.run` has measured so far."""

    steps: int = 0
    train_time: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0
    train_loss: float = math.nan
    eval_seconds: float = 0.0  # the last evaluation's duration: kept in reserve at the end
    stopped_by: int | None = None  # a stop signal some rank received: all stop after the same step

    def chars_per_s(self, chars_per_step: int) -> float:
        return self.steps * chars_per_step / self.train_time if self.train_time else 0.0


class Trainer:
    """A training run in a run directory: build, step, evaluate, checkpoint, run.

    Args:
        config: the settings (validated here; ``data`` and ``out`` are made absolute).
        resume: continue the run in ``config.out`` from its checkpoint.pt; ``config`` must then
            equal the saved settings but for :data:`~scratchrnn.lm.config.RESUME_CHANGEABLE`
            (see :func:`resume_config`).
        force: start afresh in a directory that holds another run, which is kept aside until the
            new run has written its first checkpoint (see :mod:`scratchrnn.lm.rundir`).
        world: the data-parallel world this process belongs to (default: the one
            :func:`scratchrnn.lm.distributed.init` joined, else one process). ``batch_size`` is the
            global number of streams; each rank trains on its share of them.
        saved: with ``resume``, what :func:`read_run` read (on rank 0; the other ranks pass None),
            so that the checkpoint is not read a second time. It is used only if checkpoint.pt is
            still the file it was read from once the run directory is locked; else the file is
            read again.
        schedule: with ``resume``, "keep" the saved learning-rate schedule (steps past its end
            train at its floor) or "extend" it to end where training now stops (see
            :func:`~scratchrnn.lm.schedule.resumed_schedule`).

    Nothing in the run directory is touched until the settings and the data have been checked.
    Rank 0 alone reads the text and the checkpoint and writes the run directory; the other ranks
    get what it read, or the error it met.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, force: bool = False,
                 world: World | None = None, saved: SavedRun | None = None, schedule: str = "keep") -> None:
        if resume and force:
            raise ValueError("--resume and --force exclude each other")
        if schedule != "keep" and not resume:
            raise ValueError("--schedule extend re-plans a resumed run's schedule: it needs --resume")
        self.world = world = world or distributed.current()
        self.files = RunDir(os.path.abspath(config.out))
        try:
            self.config, ckpt, self.corpus, self.schedule = world.on_main(
                _open_run, self.files, world, config, resume, force, saved, schedule)
            self.run_dir = Path(self.config.out)
            N, T = self.config.batch_size, self.config.seq_len
            self.batches = StreamBatches(self.corpus.train, N, T, "the training split").select(
                world.shard(N), world.device
            )  # this rank's streams: (S + 1, N / W)
            val = eval_batches(self.corpus.val, self.config.eval_streams, T, "the validation split")
            self.val_batches = val.select(world.shard(val.batch_size), world.device)  # may be empty
            self.build()
            self.step, self.elapsed = 0, 0.0
            self._saved_at = 0.0  # elapsed at the last checkpoint.pt (checkpoint_seconds counts from it)
            self.h: Tensor | None = None  # the state carried into the next chunk (this rank's streams)
            self.best_val = math.inf
            self.val_loss: float | None = None
            self._finished = False
            if ckpt is not None:
                self._restore(ckpt)
            if world.is_main:
                self._prepare_files(ckpt)
        except BaseException:
            self._give_up()
            raise

    def _prepare_files(self, ckpt: dict | None) -> None:
        if ckpt is not None:
            self.files.truncate_log(self.step)
        # Resumed too (once the checkpoint has been restored): a resume may change the stopping
        # rule or the output's cadence, and config.json says what the run continues with, as the
        # checkpoints it writes from here on do.
        self.files.write_config({
            "train": asdict(self.config), "model": self.model.config.to_dict(),
            "vocab_size": len(self.corpus.vocab), "torch": torch.__version__,
        })

    def _give_up(self) -> None:
        """After a failure: a run that has no checkpoint of its own leaves nothing behind."""
        if self.world.is_main:
            self.files.abort()
            self.files.close()

    # --- the parts ----------------------------------------------------------------------------

    def build(self) -> None:
        """The model, the optimizer, the loss and the clipping function, from the seed up."""
        c = self.config
        b = make_backend(c, len(self.corpus.vocab), self.world.device)
        self.model, self.optimizer, self.loss_fn, self.clip_fn = b.model, b.optimizer, b.loss_fn, b.clip_fn
        self.params = list(self.model.parameters())
        self.model.train()
        # The steps run through DDP when there are several ranks: it averages the gradients of our
        # backward across them. Evaluation and sampling use the bare model (no gradients to sync).
        self.train_model = self.world.wrap(self.model)
        self.world.seed_rank(c.seed)  # ranks ≥ 1: dropout streams of their own

    def train_step(self, x: Tensor, y: Tensor, lr: float, h: Tensor | None) -> tuple[Tensor, Tensor]:
        """One update on the chunk (x, y), both (T, N), starting from state h (None: zeros).

        Returns the loss (a scalar tensor, nats/char) and the final state, detached.
        """
        logits, h_n = self.train_model(x, h)  # (T, N, V), (L, N, H)
        loss = self.loss_fn(logits, y)
        for p in self.params:
            p.grad = None
        with self.world.collective("the gradients' all_reduce (DDP, in backward)"):
            loss.backward()  # our hand-written backward (scratch), or autograd's (torch); DDP averages
        if self.config.clip:
            self.clip_fn(self.params, self.config.clip)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        return loss.detach(), h_n.detach()

    def evaluate(self) -> float:
        """Validation loss, nats/char, over the whole validation split with the state carried.

        Each rank sums the loss over its share of the validation streams; the sums and the
        character counts are added across the ranks, so the mean is over the whole split.
        """
        mine = Evaluation(math.nan, 0)  # a rank may have no validation stream
        if self.val_batches.batch_size:
            mine = evaluate(self.model, self.val_batches)
        total, count = self.world.sum([mine.total, mine.chars])
        return total / count

    def save_checkpoint(self, path: Path | None = None) -> Path:
        """Write everything needed to resume exactly, atomically, to ``path`` (checkpoint.pt).

        Every rank calls it (the streams' states and the dropout generators are gathered from all
        of them); rank 0 writes. ``hidden`` is the state of all N streams, (L, N, H), whatever the
        number of processes, so that the run resumes on any number of them.
        """
        path = path or self.files.checkpoint
        w = self.world
        if path == self.files.checkpoint:
            self._saved_at = self.elapsed
        hidden = w.gather(None if self.h is None else self.h.cpu())  # (L, N / W, H) per rank
        hidden = None if hidden[0] is None else torch.cat(hidden, 1)  # (L, N, H)
        rng_ranks = w.gather(w.rng_state())
        if not w.is_main:
            return path
        save_checkpoint(path, {
            "model_config": self.model.config.to_dict(),
            "train_config": asdict(self.config),
            "vocab": self.corpus.vocab.chars,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": torch.get_rng_state(),
            "step": self.step,
            "elapsed": self.elapsed,
            "hidden": hidden,
            "rng_ranks": rng_ranks,  # every rank's dropout generator (of its device type)
            "rng_device": w.device.type,
            "world_size": w.size,
            "best_val": self.best_val,
            "val_loss": self.val_loss,
            "schedule": asdict(self.schedule),
            "finished": self._finished,  # run() reached its end: resuming needs a later one
            "data_file": self.corpus.data_file and self.corpus.data_file.to_dict(),  # size and hash
        })
        if path == self.files.checkpoint:
            self.files.commit()  # the new run has started cleanly: a run it replaces may go
        return path

    def _restore(self, ckpt: dict) -> None:
        where = self.files.checkpoint
        c = self.config
        try:
            check_finite(ckpt["model"], where)
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.world.restore_rng(ckpt.get("rng_ranks"), ckpt.get("rng_device"), ckpt["rng"],
                                   self.config.seed + int(ckpt["step"]))
            self.step, self.elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
            self._saved_at = self.elapsed
            self.best_val = float(ckpt["best_val"])
            hidden = saved_hidden(ckpt, (c.num_layers, c.batch_size, c.hidden_size))
            if hidden is not None:  # (L, N, H), all streams: keep this rank's
                self.h = hidden[:, self.world.shard(c.batch_size)].to(self.world.device)
            self.val_loss = ckpt.get("val_loss")
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            reason = " ".join(str(err).split())
            raise ValueError(f"{where} cannot be resumed: {reason}") from None

    def read_log(self) -> list[dict]:
        """The records of this run's log.jsonl (see :func:`scratchrnn.lm.rundir.read_log`)."""
        return read_log(self.files.path)

    def _sample(self) -> None:
        if self.config.sample_length:
            text = sample_text(self.model, self.corpus.vocab, self.config.sample_length, self.config.seed)
            self.files.add_sample(f"step {self.step}, val loss {self.val_loss:.4f} nats/char", text)

    def plot(self) -> Path:
        """loss.png: train and validation loss against steps and against seconds."""
        c = self.config
        title = (f"CharRNN, H = {c.hidden_size}, L = {c.num_layers}, {c.optimizer} lr {c.lr:g}, "
                 f"N = {c.batch_size}, T = {c.seq_len}")
        path = self.files.path / "loss.png"
        atomic_write(path, loss_png(self.files.read_log(), title))
        return path

    # --- the loop -----------------------------------------------------------------------------

    def _eval_and_save(self) -> float:
        """Validate, then checkpoint (and best.pt, and a sample); the evaluation's seconds, which
        count in the run's clock before the checkpoint saves it: the time printed at the end is
        the time saved, and a resume reads the clock the run stopped at."""
        t0 = time.perf_counter()
        self.val_loss = self.evaluate()
        seconds = self.world.main_value(time.perf_counter() - t0)  # rank 0's clock, as for the steps
        self.elapsed += seconds
        if self.world.is_main:
            self.files.log({"step": self.step, "time": round(self.elapsed, 3), "val_loss": self.val_loss,
                            "val_bpc": self.val_loss * NATS_TO_BITS})
        self.save_checkpoint()
        if self.val_loss < self.best_val:  # the same decision on every rank: the loss is agreed
            self.best_val = self.val_loss
            self.save_checkpoint(self.run_dir / "best.pt")
        if self.world.is_main:
            self._sample()
        return seconds

    def _should_stop(self, s: _Session) -> bool:
        c = self.config
        return (s.stopped_by is not None or bool(c.max_steps and self.step >= c.max_steps)
                or bool(c.time_budget and self.elapsed + s.eval_seconds >= c.time_budget))

    def _one_step(self, s: _Session, received: list[int]) -> float:
        """A training step and what it means for the log and the evaluations; its loss."""
        c = self.config
        t0 = time.perf_counter()
        k = self.step % len(self.batches)
        x, y = self.batches[k]
        h = None if k == 0 else self.h  # a new pass over the text starts from zeros
        lr = learning_rate(c, self.step, self.schedule.progress(self.step, self.elapsed))
        loss, self.h = self.train_step(x, y, lr, h)
        dt = time.perf_counter() - t0
        # One all-reduce: the mean loss over the ranks, rank 0's clock (the time budget and so the
        # learning rate must agree) and any rank's stop signal.
        loss_value, dt, s.stopped_by = self.world.agree(loss.item(), dt, received)
        if not math.isfinite(loss_value):  # the mean: every rank stops here
            raise self.world.main_error(_diverged, self.files, loss_value, self.step + 1)
        self.step += 1
        self.elapsed += dt
        s.steps += 1
        s.train_time += dt
        s.loss_sum += loss_value
        s.loss_count += 1
        if self.step % c.log_interval == 0:
            s.train_loss = s.loss_sum / s.loss_count
            if self.world.is_main:
                self.files.log({"step": self.step, "time": round(self.elapsed, 3),
                                "train_loss": s.train_loss, "lr": lr})
            s.loss_sum, s.loss_count = 0.0, 0
        if self.step % c.eval_interval == 0:
            s.eval_seconds = self._eval_and_save()
            log.info("step %d: val loss %.4f nats/char (%.3f bits/char)",
                     self.step, self.val_loss, self.val_loss * NATS_TO_BITS)
        elif self._checkpoint_due():  # bounds the work a fault can cost, whatever the validation's
            self.save_checkpoint()  # cadence (its time, as every save's, is not training time)
        return loss_value

    def _checkpoint_due(self) -> bool:
        """Whether checkpoint_interval steps, or checkpoint_seconds, have passed since the last
        checkpoint (the same answer on every rank: the step and rank 0's clock are agreed)."""
        c = self.config
        if c.max_steps and self.step >= c.max_steps:
            return False  # the end writes one anyway
        return bool(c.checkpoint_interval and self.step % c.checkpoint_interval == 0) or bool(
            c.checkpoint_seconds and self.elapsed - self._saved_at >= c.checkpoint_seconds)

    def _loop(self, s: _Session) -> None:
        chars_per_step = self.config.batch_size * self.config.seq_len
        bar = _progress_bar(self.config, self.world.is_main, self.step)
        # Several processes may wait for each other in a collective: the watchdog ends a process
        # whose save-and-stop takes longer than torchrun's patience (see distributed.stop_grace).
        grace = None if self.world.size == 1 else distributed.LOOP_GRACE
        with noted_signals() as received, distributed.stop_grace(grace), bar, logging_redirect_tqdm():
            while not self._should_stop(s):
                loss_value = self._one_step(s, received)
                bar.update(1)
                bar.set_postfix_str(_progress_note(self.config, self.elapsed, loss_value, self.val_loss,
                                                   s.chars_per_s(chars_per_step)), refresh=False)

    def run(self) -> TrainResult:
        """Train until max_steps, the time budget, or SIGINT/SIGTERM; evaluate and checkpoint on
        the way and at the end."""
        c = self.config
        s = _Session()
        try:
            self._loop(s)
            if s.loss_count:
                s.train_loss = s.loss_sum / s.loss_count
            interrupted = signal.Signals(s.stopped_by).name if s.stopped_by else None
            if interrupted:
                self.save_checkpoint()
                log.info("%s: checkpoint saved at step %d in %s", interrupted, self.step, self.run_dir)
            else:
                self._finished = True  # marked in the checkpoints from here on
                if self.val_loss is None or self.step % c.eval_interval:
                    self._eval_and_save()  # its seconds count within the budget (kept in reserve)
                else:  # the loop's last evaluation wrote the checkpoint: mark it finished
                    self.save_checkpoint()
            if self.world.is_main:
                self.plot()
        finally:
            self._give_up()  # nothing to undo once a checkpoint is written; the lock is let go
        return TrainResult(self.step, self.elapsed, s.train_loss, self.val_loss,
                           s.chars_per_s(c.batch_size * c.seq_len), str(self.files.checkpoint), interrupted)


def train(config: TrainConfig | None = None, resume: bool = False, force: bool = False,
          auto: bool = False, schedule: str = "keep") -> TrainResult | None:
    """Train a :class:`CharRNN` as ``config`` says (defaults: ``TrainConfig()``); see :class:`Trainer`.

    With ``auto``, resume the run in ``config.out`` if it holds one with these settings (but for
    :data:`~scratchrnn.lm.config.RESUME_CHANGEABLE`), else start it (see :func:`auto_resume`);
    None if that run is finished already.

    Example:
        >>> result = train(TrainConfig(out="runs/tiny", max_steps=200, time_budget=None))
        >>> result.val_loss  # nats/char
    """
    config = config or TrainConfig()
    if not auto:
        return Trainer(config, resume=resume, force=force, schedule=schedule).run()
    if resume or force:
        raise ValueError("auto excludes resume and force: it chooses between them")
    world = distributed.current()
    read: dict = {}
    mode, config, note = world.on_main(auto_resume, asdict(config), read)
    if mode == "finished":
        log.info("%s", note)
        return None
    return Trainer(config, resume=mode == "resume", force=mode == "force", world=world,
                   saved=read.pop("run", None), schedule=schedule if mode == "resume" else "keep").run()
