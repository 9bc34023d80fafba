"""loss.png: the train and validation loss of a run, against steps and against seconds, drawn from
the records of its log (the run directory only stores the picture)."""

from __future__ import annotations

import io
from collections.abc import Sequence

__all__ = ["loss_png"]


def loss_png(records: Sequence[dict], title: str) -> bytes:
    """The PNG of the train losses (records with ``train_loss``) and the validation losses (with
    ``val_loss``), each record holding its ``step`` and ``time`` (seconds of training)."""
    from matplotlib.figure import Figure  # imported here: only a run's end needs it

    train = [r for r in records if "train_loss" in r]
    val = [r for r in records if "val_loss" in r]
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in ((axes[0], "step", "step"), (axes[1], "time", "training time (s)")):
        ax.plot([r[key] for r in train], [r["train_loss"] for r in train], label="train", lw=1)
        ax.plot([r[key] for r in val], [r["val_loss"] for r in val], "o-", label="validation")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("cross-entropy (nats/char)")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
