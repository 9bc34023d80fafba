"""The checkpoint format of the language model: what a checkpoint holds, writing it, reading it.

A checkpoint is one ``torch.save`` file (a dict of tensors, numbers, strings and lists, read back
with ``torch.load(weights_only=True)``, so it runs no code)::

    format, version   "scratchrnn.charlm", CHECKPOINT_VERSION
    model_config      CharRNN's settings (vocab_size, embedding_dim, hidden_size, ...)
    train_config      the TrainConfig of the run, as a dict
    vocab             the vocabulary's characters, a string
    model, optimizer  their state_dicts
    step, elapsed     updates done, seconds of training
    hidden            the state carried into the next chunk, all N streams: (L, N, H), or None
    rng, rng_ranks, rng_device, world_size     the generators, to resume exactly
    best_val, val_loss, schedule               the best and last validation loss; the schedule's end

It is serialised in memory and then written by :func:`scratchrnn.lm.files.atomic_write`, so a
kill or a full disk leaves the previous checkpoint whole.
"""

from __future__ import annotations

import io
import os

import torch

from scratchrnn.lm.data import Vocab
from scratchrnn.lm.files import atomic_write, read_regular
from scratchrnn.lm.model import CharRNN

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "MAX_CHECKPOINT_BYTES", "check_finite",
           "load_checkpoint", "load_model", "save_checkpoint", "saved_hidden"]

CHECKPOINT_FORMAT = "scratchrnn.charlm"
CHECKPOINT_VERSION = 1
MAX_CHECKPOINT_BYTES = 2**36  # 64 GiB: far above any model this CPU library trains
REQUIRED = ("model_config", "train_config", "vocab", "model", "step")


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write ``state`` (the fields of the module docstring but the format's own) atomically."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, buffer)
    atomic_write(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        OSError: missing, a directory, a loop of symbolic links, unreadable.
        ValueError: not a regular file, not a checkpoint, corrupt or truncated, another version.
    """
    path = os.fspath(path)
    raw = read_regular(path, "a checkpoint file", MAX_CHECKPOINT_BYTES)
    try:
        ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a bad file; all mean the same here
        if not raw.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive: this is another file
            raise ValueError(f"{path} is not a readable checkpoint: not a file torch.save wrote (pass the "
                             "checkpoint.pt or best.pt of a scratchrnn train run)") from None
        # Never torch's advice to retry with weights_only=False: that runs whatever code the file holds.
        lines = [line.split("WeightsUnpickler error:")[-1].strip() for line in str(err).splitlines()]
        lines = [line for line in lines if line and "weights_only" not in line]
        reason = lines[0] if lines else type(err).__name__
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a scratchrnn language-model checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {ckpt.get('version')!r}; "
            f"this scratchrnn reads version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"{path} is an incomplete checkpoint (missing {', '.join(missing)})")
    return ckpt


def check_finite(state_dict: dict, path: str | os.PathLike) -> None:
    """Raise ValueError naming the first weight of ``state_dict`` with a NaN or an infinity."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{os.fspath(path)} holds non-finite weights: {bad} NaN or infinite value(s) "
                             f"in {name}; it cannot be used")


def saved_hidden(ckpt: dict, expected: tuple[int, int, int]) -> torch.Tensor | None:
    """The carried state of all N streams in ``ckpt``, checked to be (L, N, H) = ``expected``
    (None: the run stopped before its first step); raises ValueError otherwise."""
    hidden = ckpt["hidden"]
    if hidden is not None and (not isinstance(hidden, torch.Tensor) or tuple(hidden.shape) != expected):
        shape = tuple(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__
        raise ValueError(f"its hidden state is {shape}, expected (L, N, H) = {expected}")
    return hidden


def load_model(path: str | os.PathLike) -> tuple[CharRNN, Vocab, dict]:
    """A trained :class:`CharRNN` (in eval mode), its vocabulary and the checkpoint's contents.

    Raises ValueError (besides :func:`load_checkpoint`'s errors) for a model that does not fit
    its configuration or its vocabulary, or whose weights are not all finite.
    """
    ckpt = load_checkpoint(path)
    try:
        model = CharRNN(**ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
        vocab = Vocab(ckpt["vocab"])
    except (TypeError, RuntimeError, ValueError, KeyError) as err:
        reason = " ".join(str(err).split())  # load_state_dict's message spans lines
        raise ValueError(f"{os.fspath(path)} holds an inconsistent model: {reason}") from None
    if len(vocab) != model.vocab_size:
        raise ValueError(f"{os.fspath(path)} holds an inconsistent model: its vocabulary has {len(vocab)} "
                         f"characters but the model predicts {model.vocab_size}")
    check_finite(ckpt["model"], path)
    return model.eval(), vocab, ckpt
