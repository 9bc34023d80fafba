"""Training the character-level language model: the loop, evaluation, checkpoints, resume.

The loop is truncated BPTT over contiguous streams (:class:`scratchrnn.lm.data.StreamBatches`): each
step reads a (T, N) chunk, starts from the state the previous chunk ended in (detached, so the
gradient stops there; reset to zeros when a pass over the text starts again), and updates the
parameters once. The learning rate warms up linearly over the first steps, then follows a cosine
from the peak down to ``min_lr_ratio`` × peak at the end of training; "the end" is ``max_steps``
or the time budget, whichever comes first (a time-budgeted run measures its progress in seconds).

:class:`Trainer` keeps the parts apart — :meth:`~Trainer.build` (model and optimizer),
:meth:`~Trainer.train_step`, :meth:`~Trainer.evaluate`, :meth:`~Trainer.save_checkpoint` — and
:meth:`~Trainer.run` strings them together with the progress bar, the log, the evaluations and
the stop conditions. :func:`train` is the one-call entry point.

A run directory holds::

    config.json      the TrainConfig and the model's configuration
    log.jsonl        one JSON record per log interval (train loss) and per evaluation (val loss)
    checkpoint.pt    the latest state: enough to resume exactly (see save_checkpoint)
    best.pt          the state with the lowest validation loss so far
    loss.png         train and validation loss against steps and against seconds
    samples.txt      a sample of generated text after each evaluation

Checkpoints are written atomically (temp file + rename) and read with
``torch.load(weights_only=True)``. A resumed run computes the same losses as an uninterrupted one
(for step-based schedules; a time-budgeted schedule depends on the clock).

Under torchrun the same loop trains data-parallel (see :mod:`scratchrnn.lm.distributed`): each rank
steps on its share of the N streams, ``batch_size`` stays the global N, and only rank 0 touches
files. A checkpoint holds the state of all N streams, so it resumes on any number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from scratchrnn.core import optim
from scratchrnn.lm import distributed
from scratchrnn.lm.data import StreamBatches, Vocab, load_corpus
from scratchrnn.lm.distributed import World
from scratchrnn.lm.model import CharRNN, TorchCharRNN, cross_entropy, generate

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "evaluate_checkpoint",
    "learning_rate",
    "load_checkpoint",
    "load_model",
    "resume_config",
    "train",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "scratchrnn.charlm"
CHECKPOINT_VERSION = 1
RUN_FILES = ("config.json", "log.jsonl", "checkpoint.pt", "best.pt", "loss.png", "samples.txt")
BACKENDS = ("scratch", "torch")
# What may differ from the saved settings when a run is resumed.
RESUME_CHANGEABLE = ("max_steps", "time_budget", "out", "eval_interval", "eval_streams", "log_interval",
                     "sample_length", "progress")
NATS_TO_BITS = 1 / math.log(2)


@dataclass
class TrainConfig:
    """Every setting of a training run, with the defaults of ``scratchrnn train``.

    The defaults are the best settings found for 180 s of training on a 2-core CPU
    (see README, "language model").
    """

    # data
    data: str | None = None  # a UTF-8 text file; None: the bundled tiny Shakespeare
    # model
    embedding_dim: int = 64  # E; 0 for one-hot input
    hidden_size: int = 640  # H
    num_layers: int = 1  # L
    dropout: float = 0.0
    # optimisation
    optimizer: str = "adam"
    lr: float = 3e-3  # the peak learning rate
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # the cosine ends at min_lr_ratio × lr
    clip: float = 5.0  # global gradient-norm clip; 0: off
    batch_size: int = 64  # N, parallel streams
    seq_len: int = 64  # T, steps of truncated BPTT
    max_steps: int | None = None  # stop after this many steps (None: no limit)
    time_budget: float | None = 180.0  # stop after this many seconds of training (None or 0: no limit)
    seed: int = 0
    backend: str = "scratch"  # "torch": the same model on nn.RNN + autograd + torch.optim
    # output
    out: str = "runs/charlm"
    eval_interval: int = 500  # steps between evaluations (and checkpoints)
    eval_streams: int = 32  # parallel streams when evaluating on the validation split
    log_interval: int = 10  # steps between train-loss records in log.jsonl
    sample_length: int = 300  # characters sampled after each evaluation (0: none)
    progress: bool = True  # a progress bar on a terminal

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        positive = ("hidden_size", "num_layers", "batch_size", "seq_len", "eval_interval",
                    "eval_streams", "log_interval")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("embedding_dim", "warmup_steps", "sample_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps must be a positive integer, got {self.max_steps}")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget >= 0):
            raise ValueError(f"time_budget must be a non-negative number of seconds, got {self.time_budget}")
        if not self.max_steps and not self.time_budget:
            raise ValueError("give max_steps or time_budget: without either, training never ends")
        if not 0 < self.lr < 1e9:  # above, steps overflow float32 before any loss is seen
            raise ValueError(f"lr must be > 0 (and below 1e9), got {self.lr}")
        if self.optimizer not in optim.OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; choose from {', '.join(optim.OPTIMIZERS)}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("weight_decay", "momentum", "clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be ≥ 0, got {value}")


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


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Warm-up then cosine: lr · min(1, (step + 1) / warmup) · (r + (1 − r)(1 + cos(π·progress))/2),
    progress ∈ [0, 1] the fraction of training done, r = min_lr_ratio."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    r = config.min_lr_ratio
    cosine = r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return config.lr * warm * cosine


# --------------------------------------------------------------------------------------------
# Files: atomic writes and checkpoints.
# --------------------------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    """Call ``write(f)`` on a temp file next to ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def _saved_run(run_dir: Path) -> dict:
    if not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"no run to resume in {run_dir} (no checkpoint.pt)")
    return load_checkpoint(run_dir / "checkpoint.pt")


def resume_config(out: str | os.PathLike, **changes) -> TrainConfig:
    """The settings of the run saved in ``out``, with ``changes`` (only :data:`RESUME_CHANGEABLE`
    ones: the stopping rule, the output's cadence) applied; pass it to ``train(..., resume=True)``."""
    ckpt = _saved_run(Path(out))
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in ckpt["train_config"].items() if k in known})
    bad = sorted(set(changes) - set(RESUME_CHANGEABLE))
    if bad:
        raise ValueError(
            f"{', '.join(bad)} cannot change when resuming; only {', '.join(RESUME_CHANGEABLE)} can"
        )
    for name, value in changes.items():
        setattr(config, name, value)
    config.out = os.fspath(out)
    return config


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and check a checkpoint written by :class:`Trainer` (``torch.load(weights_only=True)``).

    Raises:
        OSError: missing path, or a directory.
        ValueError: not a checkpoint, corrupt or truncated, or another format version.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory, not a checkpoint file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a bad file; all mean the same here
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a scratchrnn language-model checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {ckpt.get('version')!r}; "
            f"this scratchrnn reads version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in ("model_config", "train_config", "vocab", "model", "step") if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is an incomplete checkpoint (missing {', '.join(missing)})")
    return ckpt


def load_model(path: str | os.PathLike) -> tuple[CharRNN, Vocab, dict]:
    """A trained :class:`CharRNN` (in eval mode), its vocabulary and the checkpoint's contents."""
    ckpt = load_checkpoint(path)
    try:
        model = CharRNN(**ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
        vocab = Vocab(ckpt["vocab"])
    except (TypeError, RuntimeError, ValueError, KeyError) as err:
        raise ValueError(f"{os.fspath(path)} holds an inconsistent model: {err}") from None
    return model.eval(), vocab, ckpt


def _eval_batches(data: Tensor, streams: int, seq_len: int, name: str) -> StreamBatches:
    """Batches that cover ``data`` with at most ``streams`` streams (fewer for short data)."""
    if len(data) < 2:
        raise ValueError(f"{name} is too short to evaluate on: {len(data)} character(s)")
    N = min(streams, len(data) - 1)
    S = (len(data) - 1) // N
    return StreamBatches(data, N, min(seq_len, S), name)


@torch.no_grad()
def total_loss(model: nn.Module, batches: StreamBatches) -> tuple[float, int]:
    """Summed cross-entropy (nats) over every chunk of ``batches`` and the number of characters,
    the state carried across chunks (each of the N streams starts from zeros)."""
    was_training = model.training
    model.eval()
    try:
        h = model.init_state(batches.batch_size)
        total, count = 0.0, 0
        for x, y in batches.chunks():
            logits, h = model(x, h)
            total += cross_entropy(logits, y).item() * y.numel()
            count += y.numel()
        return total, count
    finally:
        model.train(was_training)


def evaluate_loss(model: nn.Module, batches: StreamBatches) -> float:
    """Mean cross-entropy (nats/char) over every chunk of ``batches`` (see :func:`total_loss`)."""
    total, count = total_loss(model, batches)
    return total / count


def evaluate_checkpoint(path: str | os.PathLike, data: str | os.PathLike | None = None,
                        streams: int | None = None) -> tuple[float, int]:
    """Validation loss of a checkpoint, in nats/char, and the number of characters it covers.

    ``data`` None: the checkpoint's own validation split (the last 10 % of its training text);
    otherwise the last 10 % of that file, encoded with the checkpoint's vocabulary. ``streams``
    None: as many as the training run validated with (so the numbers agree).
    """
    model, vocab, ckpt = load_model(path)
    saved = ckpt["train_config"]
    source = data if data is not None else saved.get("data")
    corpus = load_corpus(source, vocab)
    name = "the validation split" if data is None else f"the validation split of {os.fspath(data)}"
    streams = streams or saved.get("eval_streams", TrainConfig.eval_streams)
    batches = _eval_batches(corpus.val, streams, saved.get("seq_len", TrainConfig.seq_len), name)
    return evaluate_loss(model, batches), batches.batch_size * batches.stream_len


# --------------------------------------------------------------------------------------------
# The trainer.
# --------------------------------------------------------------------------------------------


class Trainer:
    """A training run in a run directory: build, step, evaluate, checkpoint, run.

    Args:
        config: the settings (validated here).
        resume: continue the run in ``config.out`` from its checkpoint.pt; ``config`` must then
            equal the saved settings but for :data:`RESUME_CHANGEABLE` (see :func:`resume_config`).
        force: start afresh in a directory that holds another run, deleting its files.
        world: the data-parallel world this process belongs to (default: the one
            :func:`scratchrnn.lm.distributed.init` joined, else one process). ``batch_size`` is the
            global number of streams; each rank trains on its share of them.

    Nothing in the run directory is touched until the settings and the data have been checked.
    Rank 0 alone reads the text and the checkpoint and writes the run directory; the other ranks
    get what it read, or the error it met.
    """

    def __init__(self, config: TrainConfig, resume: bool = False, force: bool = False,
                 world: World | None = None) -> None:
        if resume and force:
            raise ValueError("--resume and --force exclude each other")
        self.run_dir = Path(config.out)
        self.config = config
        self.world = world = world or distributed.current()
        ckpt, self.corpus = world.on_main(self._open_run, resume, force)
        N, T = config.batch_size, config.seq_len
        self.batches = StreamBatches(self.corpus.train, N, T, "the training split").select(
            world.shard(N), world.device
        )  # this rank's streams: (S + 1, N / W)
        val = _eval_batches(self.corpus.val, config.eval_streams, T, "the validation split")
        self.val_batches = val.select(world.shard(val.batch_size), world.device)  # may be empty

        self.build()
        self.step = 0
        self.elapsed = 0.0
        self.h: Tensor | None = None  # the state carried into the next chunk (this rank's streams)
        self.best_val = math.inf
        self.val_loss: float | None = None
        if ckpt is not None:
            self._restore(ckpt)
            if world.is_main:
                self._truncate_log(self.step)
        elif world.is_main:
            _write_json(self.run_dir / "config.json", {
                "train": asdict(config), "model": self.model.config.to_dict(),
                "vocab_size": len(self.corpus.vocab), "torch": torch.__version__,
            })

    def _open_run(self, resume: bool, force: bool):
        """Check the settings, read the text (and the checkpoint), prepare the run directory;
        returns (checkpoint or None, corpus). Run by rank 0 alone."""
        config = self.config
        ckpt = None
        config.validate()
        self.world.check_batch_size(config.batch_size)
        if resume:
            ckpt = _saved_run(self.run_dir)
            for name, saved in ckpt["train_config"].items():
                if name not in RESUME_CHANGEABLE and getattr(config, name, saved) != saved:
                    raise ValueError(
                        f"{name} cannot change when resuming (the run in {self.run_dir} has "
                        f"{saved!r}, got {getattr(config, name)!r}); only "
                        f"{', '.join(RESUME_CHANGEABLE)} can"
                    )
        corpus = load_corpus(config.data, Vocab(ckpt["vocab"]) if ckpt else None)
        StreamBatches(corpus.train, config.batch_size, config.seq_len, "the training split")
        _eval_batches(corpus.val, config.eval_streams, config.seq_len, "the validation split")
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise NotADirectoryError(f"{self.run_dir} exists and is not a directory")
        if not resume and self._holds_run() and not force:
            raise FileExistsError(
                f"{self.run_dir} holds another run; pass --resume to continue it or --force to replace it"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if force:
            for name in RUN_FILES:
                (self.run_dir / name).unlink(missing_ok=True)
        return ckpt, corpus

    def _holds_run(self) -> bool:
        return any((self.run_dir / name).exists() for name in RUN_FILES)

    # --- the parts ----------------------------------------------------------------------------

    def build(self) -> None:
        """The model, the optimizer, the loss and the clipping function, from the seed up."""
        c = self.config
        torch.manual_seed(c.seed)
        args = (len(self.corpus.vocab), c.embedding_dim, c.hidden_size, c.num_layers, c.dropout)
        if c.backend == "scratch":
            self.model = CharRNN(*args).to(self.world.device)
            self.optimizer = optim.make_optimizer(
                c.optimizer, self.model.parameters(), c.lr, c.weight_decay, c.momentum
            )
            self.loss_fn, self.clip_fn = cross_entropy, optim.clip_grad_norm_
        else:  # the baseline: the same model and update rules, all from torch
            self.model = TorchCharRNN(*args).to(self.world.device)
            kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                    "sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad}[c.optimizer]
            extra = {"momentum": c.momentum} if c.optimizer == "sgd" else {}
            self.optimizer = kind(self.model.parameters(), lr=c.lr, weight_decay=c.weight_decay, **extra)

            def loss_fn(logits, y):
                return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

            self.loss_fn, self.clip_fn = loss_fn, torch.nn.utils.clip_grad_norm_
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
        total, count = total_loss(self.model, self.val_batches) if self.val_batches.batch_size else (0.0, 0)
        total, count = self.world.sum([total, count])
        return total / count

    def save_checkpoint(self, path: Path | None = None) -> Path:
        """Write everything needed to resume exactly, atomically, to ``path`` (checkpoint.pt).

        Every rank calls it (the streams' states and the dropout generators are gathered from all
        of them); rank 0 writes. ``hidden`` is the state of all N streams, (L, N, H), whatever the
        number of processes, so that the run resumes on any number of them.
        """
        path = path or self.run_dir / "checkpoint.pt"
        w = self.world
        hidden = w.gather(None if self.h is None else self.h.cpu())  # (L, N / W, H) per rank
        hidden = None if hidden[0] is None else torch.cat(hidden, 1)  # (L, N, H)
        rng_ranks = w.gather(w.rng_state())
        if not w.is_main:
            return path
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
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
        }
        _atomic_write(path, lambda f: torch.save(state, f))
        return path

    def _restore(self, ckpt: dict) -> None:
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self._restore_rng(ckpt)
            self.step, self.elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
            hidden, self.best_val = ckpt["hidden"], float(ckpt["best_val"])
            if hidden is not None:  # (L, N, H), all streams: keep this rank's
                self.h = hidden[:, self.world.shard(self.config.batch_size)].to(self.world.device)
            self.val_loss = ckpt.get("val_loss")
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise ValueError(f"{self.run_dir / 'checkpoint.pt'} cannot be resumed: {err}") from None

    def _restore_rng(self, ckpt: dict) -> None:
        """Each rank continues its own dropout stream when the checkpoint comes from as many
        processes on the same kind of device; otherwise rank 0 takes the saved CPU generator and
        the others start fresh streams (dropout masks then differ from an uninterrupted run)."""
        w = self.world
        states = ckpt.get("rng_ranks")
        if states is not None and len(states) == w.size and ckpt.get("rng_device") == w.device.type:
            w.set_rng_state(states[w.rank])
        else:
            torch.set_rng_state(ckpt["rng"])
            w.seed_rank(self.config.seed + int(ckpt["step"]))

    # --- the log ------------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        if not self.world.is_main:
            return
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict]:
        path = self.run_dir / "log.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def _truncate_log(self, step: int) -> None:
        """Drop records past the checkpoint (written after it by a run that then stopped)."""
        kept = [r for r in self.read_log() if r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        _atomic_write(self.run_dir / "log.jsonl", lambda f: f.write(text.encode()))

    def _sample(self) -> None:
        c = self.config
        if not c.sample_length:
            return
        vocab = self.corpus.vocab
        start = "\n" if "\n" in vocab.stoi else vocab.chars[0]
        g = torch.Generator().manual_seed(c.seed)
        # Sampled on the CPU (the seeded generator's device), so a GPU run writes the same text.
        model = self.model if self.world.device.type == "cpu" else copy.deepcopy(self.model).cpu()
        ids = generate(model, vocab.encode(start), c.sample_length, generator=g)
        header = f"--- step {self.step}, val loss {self.val_loss:.4f} nats/char ---\n"
        with open(self.run_dir / "samples.txt", "a") as f:
            f.write(header + vocab.decode(ids) + "\n\n")

    def plot(self) -> Path:
        """loss.png: train and validation loss against steps and against seconds."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        records = self.read_log()
        train = [r for r in records if "train_loss" in r]
        val = [r for r in records if "val_loss" in r]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for ax, key, label in ((axes[0], "step", "step"), (axes[1], "time", "training time (s)")):
            ax.plot([r[key] for r in train], [r["train_loss"] for r in train], label="train", lw=1)
            ax.plot([r[key] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        axes[0].set_ylabel("cross-entropy (nats/char)")
        c = self.config
        fig.suptitle(f"CharRNN, H = {c.hidden_size}, L = {c.num_layers}, {c.optimizer} lr {c.lr:g}, "
                     f"N = {c.batch_size}, T = {c.seq_len}")
        fig.tight_layout()
        path = self.run_dir / "loss.png"
        _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
        plt.close(fig)
        return path

    # --- the loop -----------------------------------------------------------------------------

    def _progress(self) -> float:
        c = self.config
        done = [self.step / c.max_steps] if c.max_steps else []
        if c.time_budget:
            done.append(self.elapsed / c.time_budget)
        return max(done)

    def _eval_and_save(self) -> float:
        self.val_loss = self.evaluate()
        self._log({"step": self.step, "time": round(self.elapsed, 3), "val_loss": self.val_loss,
                   "val_bpc": self.val_loss * NATS_TO_BITS})
        self.save_checkpoint()
        if self.val_loss < self.best_val:  # the same decision on every rank: the loss is agreed
            self.best_val = self.val_loss
            self.save_checkpoint(self.run_dir / "best.pt")
        if self.world.is_main:
            self._sample()
        return self.val_loss

    def run(self) -> TrainResult:
        """Train until max_steps, the time budget, or SIGINT/SIGTERM; evaluate and checkpoint on
        the way and at the end."""
        c = self.config
        stop_signal: list[int] = []  # received by this process
        stopped_by: int | None = None  # received by some rank: all stop after the same step

        def on_signal(signum, frame):
            stop_signal.append(signum)

        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no signal handling
                handlers[sig] = signal.signal(sig, on_signal)
        by_step = bool(c.max_steps and not c.time_budget)  # else the bar counts seconds
        bar = tqdm(
            total=c.max_steps if by_step else round(c.time_budget), unit="step" if by_step else "s",
            disable=None if c.progress and self.world.is_main else True, dynamic_ncols=True, leave=False,
        )
        chars_per_step = c.batch_size * c.seq_len
        session_steps, session_train_time = 0, 0.0
        loss_sum, loss_count, train_loss = 0.0, 0, math.nan
        eval_seconds = 0.0  # the last evaluation's duration: kept in reserve at the end
        try:
            with logging_redirect_tqdm():
                while stopped_by is None:
                    if c.max_steps and self.step >= c.max_steps:
                        break
                    if c.time_budget and self.elapsed + eval_seconds >= c.time_budget:
                        break
                    t0 = time.perf_counter()
                    k = self.step % len(self.batches)
                    x, y = self.batches[k]
                    h = None if k == 0 else self.h  # a new pass over the text starts from zeros
                    lr = learning_rate(c, self.step, self._progress())
                    loss, self.h = self.train_step(x, y, lr, h)
                    dt = time.perf_counter() - t0
                    # One all-reduce: the mean loss over the ranks, rank 0's clock (the time budget
                    # and so the learning rate must agree) and any rank's stop signal.
                    loss_value, dt, stopped_by = self.world.agree(loss.item(), dt, stop_signal)
                    if not math.isfinite(loss_value):  # the mean: every rank stops here
                        raise self.world.main_error(self._diverged, loss_value)
                    self.step += 1
                    self.elapsed += dt
                    session_steps += 1
                    session_train_time += dt
                    loss_sum += loss_value
                    loss_count += 1
                    if self.step % c.log_interval == 0:
                        train_loss = loss_sum / loss_count
                        self._log({"step": self.step, "time": round(self.elapsed, 3),
                                   "train_loss": train_loss, "lr": lr})
                        loss_sum, loss_count = 0.0, 0
                    if self.step % c.eval_interval == 0:
                        t1 = time.perf_counter()
                        self._eval_and_save()
                        eval_seconds = self.world.main_value(time.perf_counter() - t1)
                        self.elapsed += eval_seconds
                        log.info("step %d: val loss %.4f nats/char (%.3f bits/char)",
                                 self.step, self.val_loss, self.val_loss * NATS_TO_BITS)
                    bar.update(1 if by_step else round(self.elapsed) - bar.n)
                    bar.set_postfix_str(
                        f"step {self.step} loss {loss_value:.3f} "
                        f"val {'-' if self.val_loss is None else f'{self.val_loss:.3f}'} "
                        f"{session_steps * chars_per_step / session_train_time:,.0f} chars/s",
                        refresh=False,
                    )
        finally:
            bar.close()
            for sig, old in handlers.items():
                signal.signal(sig, old)
        if loss_count:
            train_loss = loss_sum / loss_count
        interrupted = signal.Signals(stopped_by).name if stopped_by else None
        if interrupted:
            self.save_checkpoint()
            log.info("%s: checkpoint saved at step %d in %s", interrupted, self.step, self.run_dir)
        elif self.val_loss is None or self.step % c.eval_interval:
            t1 = time.perf_counter()
            self._eval_and_save()
            self.elapsed += self.world.main_value(time.perf_counter() - t1)  # within the budget
        if self.world.is_main:
            self.plot()
        chars_per_s = session_steps * chars_per_step / session_train_time if session_train_time else 0.0
        return TrainResult(self.step, self.elapsed, train_loss, self.val_loss, chars_per_s,
                           str(self.run_dir / "checkpoint.pt"), interrupted)

    def _diverged(self, loss_value: float) -> TrainingDiverged:
        path = self.run_dir / "checkpoint.pt"
        if path.exists():
            kept = f"the last good checkpoint, {path} (step {load_checkpoint(path)['step']}), is kept"
        else:
            kept = "no checkpoint had been saved yet"
        return TrainingDiverged(
            f"the training loss became {loss_value} at step {self.step + 1}; stopped, and {kept}. "
            "Try a lower learning rate or gradient clipping."
        )


def train(config: TrainConfig | None = None, resume: bool = False, force: bool = False) -> TrainResult:
    """Train a :class:`CharRNN` as ``config`` says (defaults: ``TrainConfig()``); see :class:`Trainer`.

    Example:
        >>> result = train(TrainConfig(out="runs/tiny", max_steps=200, time_budget=None))
        >>> result.val_loss  # nats/char
    """
    return Trainer(config or TrainConfig(), resume=resume, force=force).run()
