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
    finished          whether the run reached its end
    data_file         the text's size and SHA-256, {"bytes", "sha256"} (None: not recorded)

It is serialised in memory and then written by :func:`scratchrnn.lm.files.atomic_write`, so a
kill or a full disk leaves the previous checkpoint whole.

A checkpoint is input like any other file a user names: :func:`load_checkpoint` checks every
field's type and range (:func:`check_fields`) and :func:`load_model` compares the model's sizes with
the tensors' shapes, on the ``meta`` device, and with the memory free, before a single parameter is
allocated (a 126 KB file claiming H = 30000 must not cost 4 GB to refuse). Every problem is one
ValueError naming the file and the field; see docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import types
import typing

import torch

from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.data import Vocab, available_memory
from scratchrnn.lm.files import atomic_write, read_regular
from scratchrnn.lm.model import CharRNN, CharRNNConfig

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "MAX_CHECKPOINT_BYTES", "RESUME_REQUIRED",
           "check_fields", "check_finite", "check_resumable", "check_shapes", "load_checkpoint", "load_model",
           "save_checkpoint", "saved_hidden"]

CHECKPOINT_FORMAT = "scratchrnn.charlm"
CHECKPOINT_VERSION = 1
MAX_CHECKPOINT_BYTES = 2**36  # 64 GiB: far above any model this CPU library trains
REQUIRED = ("model_config", "train_config", "vocab", "model", "step")
# What resuming reads besides: a checkpoint without them can be evaluated or sampled, not resumed.
RESUME_REQUIRED = ("optimizer", "elapsed", "rng", "hidden", "best_val")
MAX_SIZE = 2**31 - 1  # any one size of a model (V, E, H, L): a tensor's dimensions stay in range


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
    check_fields(ckpt, path)
    return ckpt


# --------------------------------------------------------------------------------------------
# The schema: every field's type and range, checked before anything is built from it.
# --------------------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    # an int past float's range would raise OverflowError in the range checks, not a ValueError
    return isinstance(value, float) or (_is_int(value) and abs(value) < 2**1000)


def _fits(value, annotation) -> bool:
    """Whether ``value`` has the type a TrainConfig field declares (an int is a float too)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_fits(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return _is_real(value)
    return type(value) is annotation  # str, bool


class _Bad(ValueError):
    """One field of a checkpoint that is not what the format says."""


def _want(ok: bool, field: str, expected: str, value) -> None:
    if not ok:
        shown = repr(value) if isinstance(value, (int, float, str, type(None))) else type(value).__name__
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise _Bad(f"{field} must be {expected}, got {shown}")


def _check_train_config(saved) -> None:
    _want(isinstance(saved, dict), "train_config", "a dict of the run's settings", saved)
    hints = typing.get_type_hints(TrainConfig)
    known = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in saved:
            value = saved[f.name]
            expected = str(hints[f.name]).replace("<class '", "").replace("'>", "")
            _want(_fits(value, hints[f.name]), f"train_config.{f.name}", f"of type {expected}", value)
            known[f.name] = value
    try:  # the ranges: the same rules as for a new run's settings
        TrainConfig(**known).validate()
    except ValueError as err:
        raise _Bad(f"train_config: {err}") from None


def _check_model_config(config, vocab) -> None:
    _want(isinstance(config, dict), "model_config", "a dict of the model's sizes", config)
    fields = {f.name for f in dataclasses.fields(CharRNNConfig)}
    unknown = sorted(set(config) - fields, key=str)
    _want(not unknown, "model_config", f"a dict of {', '.join(sorted(fields))}", f"also {unknown[:3]}")
    for name in ("vocab_size", "hidden_size", "num_layers"):  # vocab_size required, the others defaulted
        if name == "vocab_size" or name in config:
            value = config.get(name)
            _want(_is_int(value) and 0 < value <= MAX_SIZE, f"model_config.{name}",
                  f"a positive integer ≤ {MAX_SIZE}", value)
    E = config.get("embedding_dim", 0)
    _want(_is_int(E) and 0 <= E <= MAX_SIZE, "model_config.embedding_dim", f"an integer from 0 to {MAX_SIZE}",
          E)
    p = config.get("dropout", 0.0)
    _want(_is_real(p) and 0 <= p < 1, "model_config.dropout", "a number in [0, 1)", p)
    if config["vocab_size"] != len(vocab):
        raise _Bad(f"its vocabulary has {len(vocab)} characters but the model predicts "
                   f"{config['vocab_size']} (model_config.vocab_size)")


def _check_vocab(vocab) -> None:
    # One string of distinct single characters: a list could hold any text (markup, escapes).
    _want(isinstance(vocab, str), "vocab", "a string of distinct characters", vocab)
    _want(len(vocab) > 0, "vocab", "a non-empty string", vocab)
    _want(len(set(vocab)) == len(vocab), "vocab", "a string of distinct characters (it repeats some)",
          len(vocab))
    try:
        vocab.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("vocab must be text, got a lone surrogate (not a character)") from None


def _check_schedule(schedule) -> None:
    if schedule is None:
        return
    _want(isinstance(schedule, dict) and set(schedule) == {"max_steps", "time_budget"}, "schedule",
          "a dict of max_steps and time_budget", schedule)
    steps, budget = schedule["max_steps"], schedule["time_budget"]
    _want(steps is None or (_is_int(steps) and steps > 0), "schedule.max_steps", "None or an integer ≥ 1",
          steps)
    _want(budget is None or (_is_real(budget) and math.isfinite(budget) and budget >= 0),
          "schedule.time_budget", "None or a number of seconds ≥ 0", budget)


def _check_data_file(data_file) -> None:
    if data_file is None:
        return
    _want(isinstance(data_file, dict) and _is_int(data_file.get("bytes")) and data_file["bytes"] >= 0
          and isinstance(data_file.get("sha256"), str), "data_file", "a dict of bytes and sha256",
          data_file)


def check_fields(ckpt: dict, path: str | os.PathLike) -> None:
    """Raise one ValueError naming ``path`` and the first field of ``ckpt`` whose type or range is
    wrong: the settings, the model's sizes, the vocabulary, the counters, the schedule. The
    tensors' shapes are :func:`check_shapes`'s."""
    try:
        _check_vocab(ckpt["vocab"])
        _check_model_config(ckpt["model_config"], ckpt["vocab"])
        _check_train_config(ckpt["train_config"])
        model = ckpt["model"]
        _want(isinstance(model, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in model.items()),
              "model", "a state_dict (names → tensors)", model)
        _want(_is_int(ckpt["step"]) and ckpt["step"] >= 0, "step", "an integer ≥ 0", ckpt["step"])
        for name in ("elapsed", "best_val"):
            if name in ckpt:
                value = ckpt[name]
                finite = name == "elapsed"
                _want(_is_real(value) and value >= 0 and (math.isfinite(value) if finite else value == value),
                      name, "a number ≥ 0", value)
        if ckpt.get("val_loss") is not None:
            _want(_is_real(ckpt["val_loss"]), "val_loss", "None or a number", ckpt["val_loss"])
        _check_schedule(ckpt.get("schedule"))
        _check_data_file(ckpt.get("data_file"))
        if "optimizer" in ckpt:
            _want(isinstance(ckpt["optimizer"], dict), "optimizer", "a state_dict", ckpt["optimizer"])
        if "hidden" in ckpt:
            _want(ckpt["hidden"] is None or isinstance(ckpt["hidden"], torch.Tensor), "hidden",
                  "None or a tensor", ckpt["hidden"])
        if "rng" in ckpt:
            _want(isinstance(ckpt["rng"], torch.Tensor) and ckpt["rng"].dtype == torch.uint8, "rng",
                  "a uint8 tensor", ckpt["rng"])
        if "finished" in ckpt:
            _want(isinstance(ckpt["finished"], bool), "finished", "True or False", ckpt["finished"])
        if "world_size" in ckpt:
            _want(_is_int(ckpt["world_size"]) and ckpt["world_size"] > 0, "world_size",
                  "a positive integer", ckpt["world_size"])
    except _Bad as err:
        raise ValueError(f"{os.fspath(path)} is not a valid checkpoint: {err}") from None


def check_shapes(ckpt: dict, path: str | os.PathLike) -> None:
    """Compare the model that ``model_config`` describes with the tensors of ``model`` — names,
    shapes, floating dtypes — on the ``meta`` device (no memory), and its size with the memory
    free; one ValueError naming ``path`` otherwise. Run :func:`check_fields` first."""
    where = os.fspath(path)
    with torch.device("meta"):  # the sizes only: nothing is allocated, whatever H says
        expected = CharRNN(**ckpt["model_config"]).state_dict()
    saved = ckpt["model"]
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or unexpected:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:4])}" if missing else "",
            f"unexpected {', '.join(unexpected[:4])}" if unexpected else "") if part)
        raise ValueError(f"{where} holds an inconsistent model: its tensors do not match model_config "
                         f"({detail})")
    for name, want in expected.items():
        got = saved[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(f"{where} holds an inconsistent model: {name} is {tuple(got.shape)}, and "
                             f"model_config says {tuple(want.shape)}")
        if not got.is_floating_point() or got.layout != torch.strided:
            raise ValueError(f"{where} holds an inconsistent model: {name} is a {got.dtype} "
                             f"{str(got.layout).removeprefix('torch.')} tensor, not a dense floating one")
    needed = sum(t.numel() * t.element_size() for t in expected.values())
    available = available_memory()
    if available is not None and needed > available:
        raise ValueError(f"{where}: its model needs {needed / 1e9:.3g} GB and {available / 1e9:.3g} GB of "
                         "memory is available")


def check_resumable(ckpt: dict, path: str | os.PathLike) -> None:
    """What resuming needs besides :func:`check_fields`: the fields it reads, the run's settings
    agreeing with the model's sizes (the run builds its model from the settings), and
    :func:`check_shapes` — all before the model is built."""
    where = os.fspath(path)
    missing = [k for k in RESUME_REQUIRED if k not in ckpt]
    if missing:
        raise ValueError(f"{where} cannot be resumed: an incomplete checkpoint "
                         f"(missing {', '.join(missing)})")
    sizes = CharRNNConfig(**ckpt["model_config"])
    for name in ("embedding_dim", "hidden_size", "num_layers", "dropout"):
        setting = ckpt["train_config"].get(name, getattr(TrainConfig, name))
        if setting != getattr(sizes, name):
            raise ValueError(f"{where} is not a valid checkpoint: train_config.{name} is {setting!r} but "
                             f"model_config.{name} is {getattr(sizes, name)!r}")
    check_shapes(ckpt, path)


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
    check_shapes(ckpt, path)
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
