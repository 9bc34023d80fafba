"""Evaluation: the cross-entropy of a model over a whole split, the state carried across chunks.

One family of names: :func:`evaluate` (a model on batches), :func:`evaluate_windows` (the same
text cut into short windows, each read from a zero state), :func:`evaluate_checkpoint` (a saved
model on its own validation split or on another file) and ``Trainer.evaluate`` (the run's
validation loss, summed over the data-parallel ranks). Each returns nats per character;
:data:`NATS_TO_BITS` converts to bits per character.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
from torch import Tensor, nn

from scratchrnn.lm import checkpoint
from scratchrnn.lm.config import TrainConfig, check_count
from scratchrnn.lm.data import StreamBatches, load_corpus
from scratchrnn.lm.model import cross_entropy

__all__ = ["NATS_TO_BITS", "Evaluation", "eval_batches", "evaluate", "evaluate_checkpoint",
           "evaluate_windows"]

NATS_TO_BITS = 1 / math.log(2)


class Evaluation(NamedTuple):
    """The mean cross-entropy over ``chars`` predicted characters, nats/char (NaN if none)."""

    loss: float
    chars: int

    @property
    def bits(self) -> float:
        return self.loss * NATS_TO_BITS

    @property
    def total(self) -> float:
        """The summed cross-entropy, nats (what ranks add up)."""
        return self.loss * self.chars if self.chars else 0.0


def eval_batches(data: Tensor, streams: int, seq_len: int, name: str) -> StreamBatches:
    """Batches that cover ``data`` with at most ``streams`` streams (fewer for short data)."""
    if len(data) < 2:
        raise ValueError(f"{name} is too short to evaluate on: {len(data)} character(s)")
    N = min(streams, len(data) - 1)
    S = (len(data) - 1) // N
    return StreamBatches(data, N, min(seq_len, S), name)


@torch.no_grad()
def evaluate(model: nn.Module, batches: StreamBatches) -> Evaluation:
    """The cross-entropy over every chunk of ``batches``, each of the N streams starting from
    zeros and carrying its state; the model is in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    try:
        h = model.init_state(batches.batch_size)
        total, count = 0.0, 0
        for x, y in batches.chunks():
            logits, h = model(x, h)
            total += cross_entropy(logits, y).item() * y.numel()
            count += y.numel()
        return Evaluation(total / count if count else math.nan, count)
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_windows(model: nn.Module, data: Tensor, window: int, batch_size: int = 256) -> Evaluation:
    """The cross-entropy with no state carried in: ``data`` cut into consecutive windows of
    ``window`` + 1 characters (the last one of each is the first of the next), each read from
    zeros, every character after the first predicted from those before it in its window only.

    This is the statistic nanoGPT reports (a model that only ever sees its block of context); it
    is higher than :func:`evaluate`'s, where the state carries the whole text before.
    """
    check_count("window", window)
    n = (len(data) - 1) // window
    if n < 1:
        raise ValueError(f"the text is too short for one window of {window} characters: "
                         f"{len(data)} character(s)")
    windows = data[torch.arange(n)[:, None] * window + torch.arange(window + 1)]  # (n, window + 1)
    was_training = model.training
    model.eval()
    try:
        total, count = 0.0, 0
        for chunk in windows.split(batch_size):
            x, y = chunk[:, :-1].t(), chunk[:, 1:].t()  # (window, b) time-major
            logits, _ = model(x, model.init_state(x.shape[1]))
            total += cross_entropy(logits, y).item() * y.numel()
            count += y.numel()
        return Evaluation(total / count, count)
    finally:
        model.train(was_training)


def evaluate_checkpoint(path: str | os.PathLike, data: str | os.PathLike | None = None,
                        streams: int | None = None, window: int | None = None) -> Evaluation:
    """The validation loss of a checkpoint, in nats/char, and the number of characters it covers.

    ``data`` None: the checkpoint's own validation split (the last 10 % of its training text);
    otherwise the last 10 % of that file, encoded with the checkpoint's vocabulary. ``streams``
    None: as many as the training run validated with (so the numbers agree). ``window``: the
    loss over windows of that many characters from a zero state (:func:`evaluate_windows`).
    """
    model, vocab, ckpt = checkpoint.load_model(path)
    saved = ckpt["train_config"]
    corpus = load_corpus(data if data is not None else saved.get("data"), vocab)
    name = "the validation split" if data is None else f"the validation split of {os.fspath(data)}"
    if window is not None:
        return evaluate_windows(model, corpus.val, window)
    streams = streams or saved.get("eval_streams", TrainConfig.eval_streams)
    return evaluate(model, eval_batches(corpus.val, streams, saved.get("seq_len", TrainConfig.seq_len), name))
