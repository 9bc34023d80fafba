"""options: which cell option lowers the character model's validation loss at equal wall time?

The tutorial's tanh RNN (one layer, H = 640, `scratchrnn train`'s other defaults) trained for 180 s
of wall time, as ``make run`` does, on the same data with the same schedule, against the same with
one option of docs/options.md — layer norm, recurrent dropout, weight drop, zoneout — and with the
GRU cell, for each of a few seeds; then once more with every option that beat the tanh RNN,
combined (when two or more did; the GRU cell does not combine with layer norm or recurrent dropout,
so it is left out of the combination). A run's answer is its last validation loss over the whole
validation split (what ``make run`` prints). Its answer made the GRU ``scratchrnn train``'s default.

Equal wall time, not equal updates: an option that makes a step slower gets fewer steps, which is
the trade a user makes. The runs use torch's default number of threads, as ``scratchrnn train``
does, so the machine must be otherwise idle while they run (the summary names the CPU and the load
average before and after); the runs' checkpoints go to a temporary folder and are deleted.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from scratchrnn.apps.bench.harness import cpu_name, load_average, md_table
from scratchrnn.apps.lab._common import LabResult, finish, new_figure, prepare_out, save
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.data import read_text
from scratchrnn.lm.train import Trainer

LONG = True  # 14 runs of 180 s: lab all runs it only when asked (--long) or at --quick sizes
THREADS = None  # torch's default, as `scratchrnn train` (the lab's other experiments use one)

# The singles: (key, label, the TrainConfig fields changed from the shared settings: the tanh RNN).
SINGLES = (
    ("default", "tanh RNN, no option", {}),
    ("layer_norm", "layer norm", {"layer_norm": True}),
    ("recurrent_dropout", "recurrent dropout 0.1", {"recurrent_dropout": 0.1}),
    ("weight_drop", "weight drop 0.2", {"weight_drop": 0.2}),
    ("zoneout", "zoneout 0.05", {"zoneout": 0.05}),
    ("gru", "GRU cell", {"cell": "gru"}),
)
SEEDS = (0, 1)
BUDGET = 180.0  # seconds of training and evaluation, as make run


def settings(quick: bool) -> dict:
    """The TrainConfig fields every run shares: the tanh RNN and the budget, the rest the defaults
    (toy sizes if quick)."""
    if quick:
        return dict(cell="rnn", time_budget=1.0, embedding_dim=8, hidden_size=16, batch_size=4, seq_len=16,
                    eval_interval=20, eval_streams=4, warmup_steps=1)
    return dict(cell="rnn", time_budget=BUDGET)


def train_one(key: str, changes: dict, seed: int, run_dir: Path, shared: dict) -> dict:
    """One run: the model with ``changes``, for the shared budget; its losses, steps and speed."""
    config = TrainConfig(out=str(run_dir), progress=False, sample_length=0, seed=seed,
                         **{**shared, **changes})
    trainer = Trainer(config, force=True)
    result = trainer.run()
    log = trainer.read_log()
    return {
        "key": key,
        "seed": seed,
        "changes": changes,
        "val_loss": result.val_loss,
        "train_loss": result.train_loss,
        "steps": result.step,
        "seconds": result.elapsed,
        "chars_per_s": result.chars_per_s,
        "val_curve": [(r["time"], r["val_loss"]) for r in log if "val_loss" in r],
    }


def combination(configs: dict) -> dict:
    """Every option (not the GRU cell) whose mean validation loss is below the tanh RNN's, merged."""
    default = configs["default"]["mean"]
    return {k: v for key, c in configs.items() if key not in ("default", "gru") and c["mean"] < default
            for k, v in c["changes"].items()}


def summarise(runs: list[dict]) -> dict:
    """Per configuration: the seeds' losses, their mean and spread, steps and speed."""
    configs = {}
    for key in dict.fromkeys(r["key"] for r in runs):
        mine = [r for r in runs if r["key"] == key]
        losses = [r["val_loss"] for r in mine]
        configs[key] = {
            "changes": mine[0]["changes"],
            "seeds": losses,
            "mean": statistics.fmean(losses),
            "spread": max(losses) - min(losses),
            "steps": statistics.fmean(r["steps"] for r in mine),
            "chars_per_s": statistics.fmean(r["chars_per_s"] for r in mine),
        }
    default = configs["default"]["mean"]
    for c in configs.values():
        c["delta"] = c["mean"] - default
    return configs


def _plot(runs: list[dict], configs: dict, labels: dict, out: Path) -> Path:
    fig, (ax_curve, ax_final) = new_figure(2, width=5.6, height=4.2)
    for i, key in enumerate(configs):
        for r in (r for r in runs if r["key"] == key):
            times, losses = zip(*r["val_curve"], strict=True)
            ax_curve.plot(times, losses, "-", color=f"C{i}", alpha=0.8,
                          label=labels[key] if r["seed"] == runs[0]["seed"] else None)
    ax_curve.set_title("Validation loss during training")
    ax_curve.set_xlabel("wall time of training and evaluation (s)")
    ax_curve.set_ylabel("validation loss (nats/char)")
    finals = [r["val_loss"] for r in runs]
    ax_curve.set_ylim(min(finals) - 0.02, max(finals) + max(0.1, max(finals) - min(finals)))  # the end
    ax_curve.legend(fontsize=8)
    keys = list(configs)
    for i, key in enumerate(keys):
        ax_final.plot([i] * len(configs[key]["seeds"]), configs[key]["seeds"], "o", color=f"C{i}")
        ax_final.plot([i - 0.25, i + 0.25], [configs[key]["mean"]] * 2, "-", color=f"C{i}")
    ax_final.axhline(configs["default"]["mean"], color="C0", lw=0.8, ls="--")
    ax_final.set_xticks(range(len(keys)), [labels[k] for k in keys], rotation=30, ha="right", fontsize=8)
    ax_final.set_title("Final validation loss (dots: seeds; bar: mean)")
    ax_final.set_ylabel("validation loss (nats/char)")
    return save(fig, out / "options.png")


def run(out: str | Path, quick: bool = False) -> LabResult:
    """Train every single option and the winners' combination for the same wall time, each seed."""
    out = prepare_out(out)
    shared = settings(quick)
    labels = {key: label for key, label, _ in SINGLES}
    load_before = load_average()
    runs = []
    with tempfile.TemporaryDirectory(prefix="scratchrnn-options-") as tmp:
        if quick:  # a 20,000-character excerpt of the corpus: validation takes moments
            excerpt = Path(tmp) / "excerpt.txt"
            excerpt.write_text(read_text()[:20_000], encoding="utf-8")
            shared["data"] = str(excerpt)
        for key, _, changes in SINGLES:
            runs += [train_one(key, changes, seed, Path(tmp) / f"{key}-{seed}", shared) for seed in SEEDS]
        combined = combination(summarise(runs))
        if len(combined) >= 2:
            labels["combined"] = "combined: " + ", ".join(sorted(combined))
            runs += [train_one("combined", combined, seed, Path(tmp) / f"combined-{seed}", shared)
                     for seed in SEEDS]
    configs = summarise(runs)
    data_name = "a 20,000-character excerpt of tiny Shakespeare" if quick else "tiny Shakespeare"
    numbers = {"settings": {k: v for k, v in shared.items() if k != "data"}, "data": data_name,
               "seeds": list(SEEDS), "cpu": cpu_name(), "load_before": load_before,
               "load_after": load_average(), "configs": configs, "order": list(configs),
               "best": min(configs, key=lambda k: configs[k]["mean"]), "labels": labels, "runs": runs}
    summary, fig_path = render(numbers, out)
    return finish("options", out, numbers, summary, [fig_path])


def render(numbers: dict, out: Path) -> tuple[str, Path]:
    """The summary (markdown) and the plot of ``numbers`` (as :func:`run` writes results.json)."""
    configs, labels, best = numbers["configs"], numbers["labels"], numbers["best"]
    configs = {k: configs[k] for k in numbers["order"]}
    fig_path = _plot(numbers["runs"], configs, labels, out)
    rows = [(labels[k], f"{c['mean']:.4f}", " / ".join(f"{v:.4f}" for v in c["seeds"]),
             f"{c['delta']:+.4f}", f"{c['steps']:,.0f}", f"{c['chars_per_s']:,.0f}")
            for k, c in configs.items()]
    c = TrainConfig(**numbers["settings"])
    header = ["model", "val loss (nats/char), mean", "per seed", "vs tanh RNN", "steps", "chars/s"]
    summary = "\n".join([
        "# options: which option lowers the validation loss at equal wall time",
        "",
        f"CharRNN on {numbers['data']} (90 % train, 10 % validation): the tutorial's tanh RNN with "
        f"`scratchrnn train`'s other defaults (one layer, H = {c.hidden_size}, E = {c.embedding_dim}, "
        f"{c.optimizer}, lr {c.lr:g}, batch {c.batch_size} × {c.seq_len} characters), then with one "
        f"option each, then the GRU cell, for {c.time_budget:g} s of wall time (training and evaluation), "
        f"seeds {', '.join(map(str, numbers['seeds']))}; then the options that beat the tanh RNN, combined "
        f"(when two or more did). Validation loss: the last evaluation, over the whole validation split. "
        f"{numbers['cpu']}, torch's default threads; load average {numbers['load_before']} before, "
        f"{numbers['load_after']} after.",
        "",
        md_table(header, rows),
        "",
        f"Lowest mean: **{labels[best]}**, {configs[best]['mean']:.4f} nats/char "
        f"({configs[best]['delta']:+.4f} against the tanh RNN).",
        "",
        "![options](options.png)",
    ])
    return summary, fig_path
