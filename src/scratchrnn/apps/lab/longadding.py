"""longadding: the adding problem at the IRNN paper's lengths, in the paper's setting.

Le, Jaitly & Hinton (2015), "A Simple Way to Initialize Recurrent Networks of Rectified Linear
Units", train on the adding problem (see :mod:`scratchrnn.apps.lab.adding`) at T = 150, 200, 300
and 400 with 100 hidden units, batch 16, plain SGD with gradient clipping and a small grid of
learning rates, for up to ~10⁶ updates; the IRNN goes below their baseline (MSE 0.1767) where tanh
RNNs stay on it. This experiment compares the IRNN with tanh under PyTorch's default init,
orthogonal and ×0.01 (H = 100, batch 16, global-norm clipping at 1, fixed seeds) in two arms:

- ``sgd``, the paper's optimizer: plain SGD over a small grid of learning rates, with as many
  updates as one CPU core affords (:func:`settings`), still a small fraction of the paper's;
- ``adam``, the lab's optimizer (as in ``lab adding``), clearly a second arm and not the paper's
  setting: it crosses the adding problem's long plateau in thousands of updates rather than
  hundreds of thousands, so at T = 100 … 400 it shows within a CPU budget what separates the inits.

Every run has a fixed number of updates per length and stops once solved (MSE < 0.01); the report
gives the steps to solve per arm, T and init, or says that a run did not solve within its budget.
It is the lab's only long experiment: ``scratchrnn lab longadding`` runs it; ``lab all`` runs it
with ``--long`` (or ``--quick``) and otherwise keeps its folder from the last run.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from scratchrnn.apps.bench.harness import fmt, md_table
from scratchrnn.apps.lab._common import CASES, LabResult, finish, prepare_out, save
from scratchrnn.apps.lab.adding import BASELINE_MSE, SOLVED_MSE, train

LONG = True  # lab all runs it only when asked (--long) or at --quick sizes
PAPER_BASELINE_MSE = 0.1767  # the baseline Le et al. quote (their data; ours predicts 1: 2/12)
LEARNING_MSE = 0.1  # well below both baselines: the network uses the marked values
LABELS = ("IRNN (identity, ReLU)", "PyTorch default", "orthogonal", "×0.01 (tutorial)")
log = logging.getLogger(__name__)
ARM_TITLES = {"sgd": "SGD (the paper's setting)", "adam": "Adam (the lab's second arm)"}


def settings(quick: bool) -> dict:
    """Per arm: optimizer, learning rates, clipping and the updates per length (the budget);
    the model and validation are the same for every run."""
    if quick:
        small = {10: 120, 20: 60}
        return dict(workers=1, train=dict(batch_size=16, hidden_size=16, eval_every=20, eval_size=64),
                    arms={"sgd": dict(optimizer="sgd", lrs=[1e-2], clip=1.0, updates=small),
                          "adam": dict(optimizer="adam", lrs=[1e-2], clip=1.0, updates=small)})
    return dict(workers=1, train=dict(batch_size=16, hidden_size=100, eval_every=500, eval_size=500),
                # From the pilots (docs/tutorial.md): SGD at lr 0.01 and 0.1 kept the IRNN on the
                # baseline for 40,000 and 10,000 updates at T = 100; Adam solved T = 100 in about
                # 6,000 updates and T = 200 in about 44,000. One core for under an hour: T = 400
                # (at least twice T = 200's updates, each twice as long) does not fit.
                arms={"sgd": dict(optimizer="sgd", lrs=[1e-2, 1e-1], clip=1.0, updates={100: 40_000}),
                      "adam": dict(optimizer="adam", lrs=[1e-3], clip=1.0,
                                   updates={100: 20_000, 200: 60_000})})


def _train_one(T: int, case: tuple[str, str, str], arm: dict, lr: float, cfg: dict, seed: int) -> dict:
    torch.set_num_threads(1)  # in a worker process too: the lab runs on one thread per process
    # Once a tanh run sits on the plateau, its gradients through time fall into subnormal floats,
    # which the CPU handles in microcode: in our pilot an update at T = 100 became ~5x slower after
    # 5,000 updates. Flushing them to zero changes nothing above 10⁻³⁸ and keeps the budget honest.
    torch.set_flush_denormal(True)
    try:
        return train(T, case, steps=arm["updates"][T], lr=lr, seed=seed, optimizer=arm["optimizer"],
                     clip=arm["clip"], **cfg["train"])
    finally:
        torch.set_flush_denormal(False)


def measure(cfg: dict, seed: int) -> dict[str, dict[str, dict[str, dict[str, dict]]]]:
    """results[arm][T][init label][lr] = one run's curve (see :func:`adding.train`); the runs are
    independent and seeded, so ``cfg['workers']`` processes give the same numbers as one."""
    cases = [case for case in CASES if case[0] in LABELS]
    cells = [(name, T, case, lr) for name, arm in cfg["arms"].items() for T in arm["updates"]
             for case in cases for lr in arm["lrs"]]
    args = [(T, case, cfg["arms"][name], lr, cfg, seed) for name, T, case, lr in cells]

    def logged(runs):  # each run as it finishes: the long mode takes the best part of an hour
        for (name, T, case, lr), r in zip(cells, runs, strict=True):
            log.info("longadding %s T=%d %s lr %g: best MSE %.4f, solved at %s (%.0f s)",
                     name, T, case[0], lr, r["best_mse"], r["solved_at_step"], r["seconds"])
            yield (name, T, case, lr), r

    if cfg["workers"] > 1:
        with ProcessPoolExecutor(cfg["workers"]) as pool:
            done = list(logged(pool.map(_train_one, *zip(*args, strict=True))))
    else:
        done = list(logged(map(_train_one, *zip(*args, strict=True))))
    results: dict = {}
    for (name, T, case, lr), r in done:
        results.setdefault(name, {}).setdefault(str(T), {}).setdefault(case[0], {})[str(lr)] = r
    return results


def first_below(run: dict, level: float) -> int | None:
    """The first evaluated update at which the validation MSE was below ``level``, or None."""
    return next((s for s, m in zip(run["steps"], run["val_mse"], strict=True) if m < level), None)


def best_lr(per_lr: dict[str, dict]) -> str:
    """The learning rate (a key of ``per_lr``) whose run solved first or, if none solved, reached
    the lowest MSE."""
    def key(item: tuple[str, dict]) -> tuple:
        lr, run = item
        solved = run["solved_at_step"]
        best = run["best_mse"] if math.isfinite(run["best_mse"]) else math.inf
        return (solved is None, solved or 0, best, float(lr))

    return min(per_lr.items(), key=key)[0]


def best_runs(results: dict) -> dict[str, dict[str, dict[str, dict]]]:
    """best[arm][T][init]: the run at :func:`best_lr`, with its milestones and the updates it had."""
    best: dict = {}
    for name, per_T in results.items():
        for T, per_init in per_T.items():
            for label, per_lr in per_init.items():
                lr = best_lr(per_lr)
                run = per_lr[lr]
                best.setdefault(name, {}).setdefault(T, {})[label] = {
                    "lr": float(lr), "best_mse": run["best_mse"], "updates_run": run["steps"][-1],
                    "learning_at_step": first_below(run, LEARNING_MSE),
                    "solved_at_step": run["solved_at_step"]}
    return best


def ms_per_update(results: dict) -> dict[str, float]:
    """Per T, the measured wall time of one update in milliseconds (its share of validation
    included), over every run at that length."""
    seconds: dict[str, float] = {}
    updates: dict[str, int] = {}
    for per_T in results.values():
        for T, per_init in per_T.items():
            for per_lr in per_init.values():
                for run in per_lr.values():
                    seconds[T] = seconds.get(T, 0.0) + run["seconds"]
                    updates[T] = updates.get(T, 0) + run["steps"][-1]
    return {T: 1e3 * seconds[T] / updates[T] for T in sorted(seconds, key=int)}


def plot(results: dict, best: dict, cfg: dict, out: Path) -> Path:
    """Validation MSE against updates: a row per arm, a column per T, each init at its best lr."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    lengths = sorted({int(T) for per_T in results.values() for T in per_T})
    fig = Figure(figsize=(4.6 * len(lengths), 3.8 * len(results)), layout="constrained")
    axes = fig.subplots(len(results), len(lengths), squeeze=False)
    for row, (name, per_T) in zip(axes, results.items(), strict=True):
        for ax, T in zip(row, lengths, strict=True):
            if str(T) not in per_T:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{ARM_TITLES.get(name, name)}:\nnot run at T = {T}\n(budget)",
                        ha="center", va="center", transform=ax.transAxes)
                continue
            for label, per_lr in per_T[str(T)].items():
                lr = best[name][str(T)][label]["lr"]
                r = per_lr[str(lr)]
                ax.semilogy(r["steps"], r["val_mse"], label=f"{label}, lr {lr:g}")
            ax.axhline(PAPER_BASELINE_MSE, color="k", ls="--", lw=0.8,
                       label=f"paper's baseline {PAPER_BASELINE_MSE}")
            ax.axhline(BASELINE_MSE, color="0.5", ls="-.", lw=0.8, label=f"predict 1 ({BASELINE_MSE:.3f})")
            ax.axhline(SOLVED_MSE, color="k", ls=":", lw=0.8, label=f"solved: MSE {SOLVED_MSE}")
            ax.set_title(f"T = {T}, {ARM_TITLES.get(name, name)}", fontsize=10)
            ax.set_xlabel(f"update (batch of {cfg['train']['batch_size']} sequences)")
            ax.set_ylabel("validation MSE (log scale)")
            ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))  # 40000 and its neighbours overlap
            ax.grid(True, which="major", alpha=0.3)
        next(ax for ax in row if ax.axison).legend(fontsize=7, loc="lower left")
    fig.suptitle(f"Adding problem, H = {cfg['train']['hidden_size']}, global-norm clipping")
    return save(fig, out / "longadding.png")


def summary_table(name: str, cfg: dict, best: dict) -> str:
    """One arm's table: per init and T, the update at which it solved (— not within the budget)."""
    updates = cfg["arms"][name]["updates"]  # {T: updates per run}

    def cell(r: dict) -> str:
        if r["solved_at_step"] is not None:
            return f"{r['solved_at_step']} (lr {r['lr']:g})"
        learning = f", < {LEARNING_MSE} at {r['learning_at_step']}" if r["learning_at_step"] else ""
        return f"— (best {fmt(r['best_mse'])}{learning}, lr {r['lr']:g})"

    rows = [["budget (updates per run)", *updates.values()]]
    rows += [[label, *(cell(best[name][str(T)][label]) for T in updates)] for label in LABELS]
    return md_table(["steps to solve", *(f"T = {T}" for T in updates)], rows)


def summarise(numbers: dict) -> str:
    """The markdown summary: the setting, then per arm the steps to solve per T and init."""
    cfg, best = numbers["config"], numbers["best"]
    t = cfg["train"]
    lines = [
        "# longadding: the adding problem at the IRNN paper's lengths",
        "",
        f"One-layer RNN, H = {t['hidden_size']}, linear readout of h_T; batch {t['batch_size']}; "
        "optimizers of scratchrnn.core.optim with global-norm clipping; a run stops once solved "
        f"(validation MSE < {SOLVED_MSE}, on {t['eval_size']} fixed sequences every {t['eval_every']} "
        f"updates). Baselines: predicting 1 scores {fmt(BASELINE_MSE)}, the paper quotes "
        f"{PAPER_BASELINE_MSE}. Each cell is the update at which the run solved the problem (— : not "
        "within the budget; then its best MSE, and the update at which it first fell below "
        f"{LEARNING_MSE} if it did), at the learning rate that did best.",
    ]
    for name, arm in cfg["arms"].items():
        lines += [
            "",
            f"## {ARM_TITLES.get(name, name)}: {arm['optimizer']}, learning rates "
            f"{', '.join(f'{lr:g}' for lr in arm['lrs'])}, clipping at {arm['clip']:g}",
            "",
            summary_table(name, cfg, best),
        ]
    per_update = ", ".join(f"{fmt(ms)} ms at T = {T}" for T, ms in numbers["ms_per_update"].items())
    lines += [
        "",
        f"Wall time per update (one thread, validation included): {per_update}. Training time, all "
        f"runs: {numbers['total_seconds']:.0f} s ({cfg['workers']} process(es)).",
        "",
        "![longadding](longadding.png)",
    ]
    return "\n".join(lines)


def run(out: str | Path, quick: bool = False, seed: int = 0) -> LabResult:
    """Train each init of :data:`LABELS` per arm, length and learning rate; write to ``out``."""
    out = prepare_out(out)
    cfg = settings(quick)
    results = measure(cfg, seed)
    best = best_runs(results)
    numbers = {
        "config": cfg,
        "seed": seed,
        "baseline_mse": BASELINE_MSE,
        "paper_baseline_mse": PAPER_BASELINE_MSE,
        "learning_mse": LEARNING_MSE,
        "solved_mse": SOLVED_MSE,
        "results": results,
        "best": best,
        "steps_to_solve": {name: {T: {label: r["solved_at_step"] for label, r in per_init.items()}
                                  for T, per_init in per_T.items()} for name, per_T in best.items()},
        "ms_per_update": ms_per_update(results),
        "total_seconds": sum(r["seconds"] for per_T in results.values() for per_init in per_T.values()
                             for per_lr in per_init.values() for r in per_lr.values()),
    }
    return finish("longadding", out, numbers, summarise(numbers), [plot(results, best, cfg, out)])

