"""longadding: the adding problem at the IRNN paper's lengths, in the paper's setting.

Le, Jaitly & Hinton (2015), "A Simple Way to Initialize Recurrent Networks of Rectified Linear
Units", train on the adding problem (see :mod:`scratchrnn.apps.lab.adding`) at T = 150, 200, 300
and 400 with 100 hidden units, batch 16, plain SGD with gradient clipping and a small grid of
learning rates, for up to ~10⁶ updates; the IRNN goes below their baseline (MSE 0.1767) where tanh
RNNs stay on it. This experiment repeats that setting (T = 100, 200, 400; H = 100; batch 16; SGD,
global-norm clipping at 1; learning rates 10⁻² and 10⁻³; fixed seeds) for the IRNN, tanh with
PyTorch's default init, orthogonal and ×0.01. Every run gets the same budget of time steps
(updates × T, as in ``adding``): 12,000 updates at T = 100 down to 3,000 at T = 400, about a
hundredth of the paper's, which is what a shared CPU allows (the runs go to two processes). The
results say what separates the inits within this budget, not what happens eventually.

It is the lab's only long experiment: ``scratchrnn lab longadding`` runs it; ``lab all`` runs it
with ``--long`` (or ``--quick``) and otherwise keeps its folder from the last run.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from scratchrnn.apps.bench.harness import fmt, md_table
from scratchrnn.apps.lab._common import CASES, LabResult, finish, new_figure, prepare_out, save
from scratchrnn.apps.lab.adding import BASELINE_MSE, SOLVED_MSE, train

LONG = True  # lab all runs it only when asked (--long) or at --quick sizes
PAPER_BASELINE_MSE = 0.1767  # the baseline Le et al. quote (their data; ours predicts 1: 2/12)
LEARNING_MSE = 0.1  # well below both baselines: the network uses the marked values
LABELS = ("IRNN (identity, ReLU)", "PyTorch default", "orthogonal", "×0.01 (tutorial)")


def settings(quick: bool) -> dict:
    """Lengths, learning rates and the training configuration (the same for every run)."""
    if quick:
        return dict(lengths=[10, 20], lrs=[1e-2], step_budget=1200, workers=1,
                    train=dict(batch_size=16, hidden_size=16, eval_every=20, eval_size=64, clip=1.0))
    return dict(lengths=[100, 200, 400], lrs=[1e-2, 1e-3], step_budget=1_200_000, workers=2,
                train=dict(batch_size=16, hidden_size=100, eval_every=300, eval_size=500, clip=1.0))


def _train_one(T: int, case: tuple[str, str, str], lr: float, cfg: dict, seed: int) -> dict:
    torch.set_num_threads(1)  # in a worker process too: the lab runs on one thread per process
    updates = cfg["step_budget"] // T
    return train(T, case, steps=updates, lr=lr, seed=seed, optimizer="sgd", **cfg["train"])


def measure(cfg: dict, seed: int) -> dict[str, dict[str, dict[str, dict]]]:
    """results[T][init label][lr] = one SGD run's curve (see :func:`adding.train`); the runs are
    independent and seeded, so ``cfg['workers']`` processes give the same numbers as one."""
    cases = [case for case in CASES if case[0] in LABELS]
    cells = [(T, case, lr) for T in cfg["lengths"] for case in cases for lr in cfg["lrs"]]
    args = [(T, case, lr, cfg, seed) for T, case, lr in cells]
    if cfg["workers"] > 1:
        with ProcessPoolExecutor(cfg["workers"]) as pool:
            runs = list(pool.map(_train_one, *zip(*args, strict=True)))
    else:
        runs = [_train_one(*a) for a in args]
    results: dict = {}
    for (T, case, lr), r in zip(cells, runs, strict=True):
        results.setdefault(str(T), {}).setdefault(case[0], {})[str(lr)] = r
    return results


def first_below(run: dict, level: float) -> int | None:
    """The first evaluated update at which the validation MSE was below ``level``, or None."""
    return next((s for s, m in zip(run["steps"], run["val_mse"], strict=True) if m < level), None)


def best_runs(results: dict) -> dict[str, dict[str, dict]]:
    """Per T and init, the learning rate whose run reached the lowest MSE, with its milestones."""
    best = {}
    for T, per_init in results.items():
        best[T] = {}
        for label, per_lr in per_init.items():
            lr, run = min(per_lr.items(), key=lambda kv: (kv[1]["best_mse"], float(kv[0])))
            best[T][label] = {"lr": float(lr), "best_mse": run["best_mse"],
                              "learning_at_step": first_below(run, LEARNING_MSE),
                              "solved_at_step": run["solved_at_step"]}
    return best


def plot(results: dict, best: dict, cfg: dict, out: Path) -> Path:
    """Validation MSE against updates, per T, each init at its best learning rate."""
    fig, axes = new_figure(len(results), width=5.0, height=4.0)
    for ax, (T, per_init) in zip(axes, results.items(), strict=True):
        for label, per_lr in per_init.items():
            lr = best[T][label]["lr"]
            run = per_lr[str(lr)]
            ax.semilogy(run["steps"], run["val_mse"], label=f"{label}, lr {lr:g}")
        paper = f"paper's baseline {PAPER_BASELINE_MSE}"
        ax.axhline(PAPER_BASELINE_MSE, color="k", ls="--", lw=0.8, label=paper)
        ax.axhline(BASELINE_MSE, color="0.5", ls="-.", lw=0.8, label=f"predict 1 ({BASELINE_MSE:.3f})")
        ax.axhline(SOLVED_MSE, color="k", ls=":", lw=0.8, label=f"solved: MSE {SOLVED_MSE}")
        ax.set_title(f"Adding problem, T = {T}: SGD, H = {cfg['train']['hidden_size']}")
        ax.set_xlabel(f"update (SGD step, batch of {cfg['train']['batch_size']} sequences)")
        ax.set_ylabel("validation MSE (log scale)")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].legend(fontsize=7, loc="lower left")
    return save(fig, out / "longadding.png")


def summarise(best: dict, cfg: dict, seconds: float) -> str:
    """The markdown summary: the setting, best MSE and steps-to-solve per T and init."""
    lengths = list(best)

    def cell(r: dict) -> str:
        learning = r["learning_at_step"] if r["learning_at_step"] is not None else "—"
        solved = r["solved_at_step"] if r["solved_at_step"] is not None else "—"
        return f"{fmt(r['best_mse'])} (lr {r['lr']:g}; < {LEARNING_MSE}: {learning}; solved: {solved})"

    rows = [[label, *(cell(best[T][label]) for T in lengths)] for label in best[lengths[0]]]
    t = cfg["train"]
    return "\n".join([
        "# longadding: the adding problem at the IRNN paper's lengths",
        "",
        f"One-layer RNN, H = {t['hidden_size']}, linear readout of h_T; plain SGD (scratchrnn.core.optim), "
        f"global-norm clipping at {t['clip']}, batch {t['batch_size']}, learning rates "
        f"{', '.join(f'{lr:g}' for lr in cfg['lrs'])} (each init shown at its best); "
        f"the same budget of {cfg['step_budget']:,} time steps per run: "
        + ", ".join(f"{cfg['step_budget'] // int(T):,} updates at T = {T}" for T in lengths)
        + f"; a run stops once solved (MSE < {SOLVED_MSE}). "
        f"Validation on {t['eval_size']} fixed sequences every {t['eval_every']} updates.",
        "",
        f"Best validation MSE, and the update at which it first fell below {LEARNING_MSE} and below "
        f"{SOLVED_MSE} (— never):",
        "",
        md_table(["init", *(f"T = {T}" for T in lengths)], rows),
        "",
        f"Training time, all runs: {seconds:.0f} s (one thread per run, {cfg['workers']} process(es)).",
        "",
        "![longadding](longadding.png)",
    ])


def run(out: str | Path, quick: bool = False, seed: int = 0) -> LabResult:
    """Train each init of :data:`LABELS` at each length and learning rate; write to ``out``."""
    out = prepare_out(out)
    cfg = settings(quick)
    results = measure(cfg, seed)
    best = best_runs(results)
    seconds = sum(r["seconds"] for per_init in results.values() for per_lr in per_init.values()
                  for r in per_lr.values())
    numbers = {
        "config": cfg,
        "seed": seed,
        "baseline_mse": BASELINE_MSE,
        "paper_baseline_mse": PAPER_BASELINE_MSE,
        "learning_mse": LEARNING_MSE,
        "solved_mse": SOLVED_MSE,
        "results": results,
        "best": best,
        "solved": {T: [k for k, r in per.items() if r["solved_at_step"]] for T, per in best.items()},
        "total_seconds": seconds,
    }
    return finish("longadding", out, numbers, summarise(best, cfg, seconds), [plot(results, best, cfg, out)])
