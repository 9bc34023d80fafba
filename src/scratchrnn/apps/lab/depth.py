"""depth: what num_layers does, measured on the character language model.

``num_layers = L`` stacks L RNN layers: layer 1 reads the characters' embeddings, layer l > 1 reads
the whole output sequence of layer l − 1, and the output layer reads the last one. Each layer past
the first adds W_ih (H × H), W_hh (H × H) and two biases: 2H² + 2H parameters, and one more
sequential loop over the T steps (forward and backward), so an update costs about L times as much.

This experiment trains ``scratchrnn.CharRNN`` (through ``scratchrnn.lm.train``, the same code as
``scratchrnn train``) with L = 1 … 4 and everything else equal: the same hidden size, data,
optimizer, learning-rate schedule and number of updates (so the same characters seen). It reports
the validation loss over the whole validation split, the parameter count and the training time.
The runs' checkpoints are written to a temporary folder and deleted; only the numbers and the plot
are kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from scratchrnn.apps.bench.harness import fmt, md_table
from scratchrnn.apps.lab._common import LabResult, finish, new_figure, prepare_out, save
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.data import read_text
from scratchrnn.lm.evaluation import NATS_TO_BITS
from scratchrnn.lm.train import Trainer

LAYERS = (1, 2, 3, 4)


def train_depth(num_layers: int, run_dir: Path, **settings) -> dict:
    """Train one CharRNN with ``num_layers`` layers in ``run_dir``; its losses, size and time."""
    config = TrainConfig(num_layers=num_layers, out=str(run_dir), progress=False, sample_length=0,
                         time_budget=None, **settings)
    trainer = Trainer(config, force=True)
    result = trainer.run()
    log = trainer.read_log()
    val = [(r["step"], r["val_loss"]) for r in log if "val_loss" in r]
    train = [(r["step"], r["train_loss"]) for r in log if "train_loss" in r]
    return {
        "num_layers": num_layers,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "rnn_parameters": sum(p.numel() for p in trainer.model.rnn.parameters()),
        "val_loss": result.val_loss,
        "val_bpc": result.val_loss * NATS_TO_BITS,
        "train_loss": result.train_loss,
        "seconds": result.elapsed,
        "chars_per_s": result.chars_per_s,
        "val_curve": val,
        "train_curve": train,
    }


def run(out: str | Path, quick: bool = False, seed: int = 0) -> LabResult:
    """Train L = 1 … 4 layers with equal budgets; write the plot and summary to ``out``."""
    out = prepare_out(out)
    settings = dict(
        cell="rnn", embedding_dim=32, hidden_size=128, batch_size=32, seq_len=64, max_steps=1200,
        eval_interval=200, log_interval=10, lr=3e-3, warmup_steps=50, seed=seed,
    )
    if quick:
        settings |= dict(embedding_dim=8, hidden_size=16, batch_size=4, seq_len=16, max_steps=6,
                         eval_interval=3, log_interval=1, warmup_steps=1)
    with tempfile.TemporaryDirectory(prefix="scratchrnn-depth-") as tmp:
        if quick:  # a 20,000-character excerpt of the corpus: validation takes moments
            excerpt = Path(tmp) / "excerpt.txt"
            excerpt.write_text(read_text()[:20_000], encoding="utf-8")
            settings["data"] = str(excerpt)
        runs = [train_depth(L, Path(tmp) / f"L{L}", **settings) for L in LAYERS]

    fig, (ax_curve, ax_layers, ax_params) = new_figure(3, width=4.6, height=3.9)
    for r in runs:
        steps, losses = zip(*r["val_curve"], strict=True)
        ax_curve.plot(steps, losses, "o-", ms=3, label=f"L = {r['num_layers']}")
    ax_curve.set_title("Validation loss during training")
    ax_curve.set_xlabel(f"update (batch of {settings['batch_size']} × {settings['seq_len']} characters)")
    ax_curve.set_ylabel("validation loss (nats/char)")
    ax_curve.legend(fontsize=8)
    layers = [r["num_layers"] for r in runs]
    ax_layers.plot(layers, [r["val_loss"] for r in runs], "o-", color="C0", label="validation loss")
    ax_layers.set_xticks(layers)
    ax_layers.set_title(f"After {settings['max_steps']} updates, H = {settings['hidden_size']}")
    ax_layers.set_xlabel("num_layers L")
    ax_layers.set_ylabel("final validation loss (nats/char)", color="C0")
    ax_time = ax_layers.twinx()
    ax_time.plot(layers, [r["seconds"] for r in runs], "s--", color="C3", label="training time")
    ax_time.set_ylabel("training time (s, one thread)", color="C3")
    ax_params.plot([r["parameters"] for r in runs], [r["val_loss"] for r in runs], "o-")
    for r in runs:
        ax_params.annotate(f"L = {r['num_layers']}", (r["parameters"], r["val_loss"]),
                           textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax_params.margins(x=0.15, y=0.12)  # room for the labels
    ax_params.set_title("Loss against model size")
    ax_params.set_xlabel("parameters (embedding + RNN + output layer)")
    ax_params.set_ylabel("final validation loss (nats/char)")
    fig_path = save(fig, out / "depth.png")

    data_name = "a 20,000-character excerpt of tiny Shakespeare" if quick else "tiny Shakespeare"
    numbers = {"settings": {k: v for k, v in settings.items() if k != "data"}, "data": data_name,
               "runs": runs}
    rows = [
        (r["num_layers"], f"{r['parameters']:,}", f"{r['rnn_parameters']:,}", fmt(r["val_loss"]),
         fmt(r["val_bpc"]), fmt(r["train_loss"]), f"{r['seconds']:.1f}")
        for r in runs
    ]
    header = ["L", "parameters", "of which RNN", "val loss (nats/char)", "val (bits/char)"]
    header += ["train loss", "training time (s)"]
    s = settings
    summary = "\n".join(
        [
            "# depth: num_layers 1 … 4 on the character language model",
            "",
            f"CharRNN on {data_name} (90 % train, 10 % validation): embedding E = "
            f"{s['embedding_dim']}, H = {s['hidden_size']}, tanh, no dropout; Adam, peak lr {s['lr']} "
            f"with {s['warmup_steps']} warm-up updates and cosine decay; {s['max_steps']} updates of "
            f"{s['batch_size']} streams × {s['seq_len']} characters for every L (the same characters "
            "seen); one thread. Validation loss over the whole validation split.",
            "",
            md_table(header, rows),
            "",
            "![depth](depth.png)",
        ]
    )
    return finish("depth", out, numbers, summary, [fig_path])
