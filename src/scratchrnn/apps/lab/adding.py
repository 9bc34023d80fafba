"""adding: the adding problem, the classic test of a long memory, per initialisation.

Each input is a length-T sequence of pairs (value, marker): values uniform on [0, 1], markers 0
except at two steps, one in the first half and one in the second (Hochreiter & Schmidhuber 1997;
Le, Jaitly & Hinton 2015). The target is the sum of the two marked values, read from the last state
through a linear layer. Predicting 1 whatever the input gives MSE = Var(u₁ + u₂) = 2/12 ≈ 0.167, the
baseline; MSE < 0.01 means the network found and remembered both marked values.

Le et al. report that an IRNN (identity W_hh, ReLU) solves lengths at which a tanh RNN stays at the
baseline. Each initialisation here gets the same model size, optimizer (Adam) and budget, far
smaller than the papers': the results say what happens within this budget, not what happens
eventually. :mod:`scratchrnn.apps.lab.longadding` takes the paper's setting to T = 100 and 200.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from scratchrnn.apps.bench.harness import fmt, md_table
from scratchrnn.apps.lab._common import CASES, LabResult, finish, new_figure, prepare_out, save
from scratchrnn.core.init import init_rnn_
from scratchrnn.core.modules import RNN
from scratchrnn.core.optim import SGD, Adam, clip_grad_norm_

BASELINE_MSE = 2.0 / 12.0  # always predicting 1 = E[u₁ + u₂]
SOLVED_MSE = 0.01


def adding_batch(T: int, N: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """N sequences of the adding problem, time-major.

    Returns:
        x (T, N, 2): [value, marker] per step; y (N,): the sum of the two marked values.
    """
    values = torch.rand(T, N, generator=generator)
    first = torch.randint(0, T // 2, (N,), generator=generator)
    second = torch.randint(T // 2, T, (N,), generator=generator)
    markers = torch.zeros(T, N)
    rows = torch.arange(N)
    markers[first, rows] = 1.0
    markers[second, rows] = 1.0
    y = values[first, rows] + values[second, rows]
    return torch.stack([values, markers], dim=2), y


def validation_set(T: int, size: int) -> tuple[Tensor, Tensor]:
    """The fixed validation sequences for length T: the same for every init."""
    return adding_batch(T, size, torch.Generator().manual_seed(10_000 + T))


class AddingModel(nn.Module):
    """scratchrnn.RNN(2, H) and a linear readout of the last state: x (T, N, 2) → ŷ (N,)."""

    def __init__(self, hidden_size: int, nonlinearity: str, scheme: str) -> None:
        super().__init__()
        self.rnn = init_rnn_(RNN(2, hidden_size, nonlinearity=nonlinearity), scheme)
        self.readout = nn.Linear(hidden_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        _, h_n = self.rnn(x)  # h_n: (1, N, H)
        return self.readout(h_n[0]).squeeze(-1)  # (N,)


def train(
    T: int,
    label_scheme_nonlinearity: tuple[str, str, str],
    steps: int,
    batch_size: int,
    hidden_size: int,
    lr: float,
    clip: float,
    eval_every: int,
    eval_size: int,
    seed: int,
    optimizer: str = "adam",
) -> dict:
    """Train one model with Adam or plain SGD (``optimizer='sgd'``); returns the validation MSE curve
    and the first step below 0.01."""
    _, scheme, nonlinearity = label_scheme_nonlinearity
    torch.manual_seed(seed)
    model = AddingModel(hidden_size, nonlinearity, scheme)
    opt = {"adam": Adam, "sgd": SGD}[optimizer](model.parameters(), lr=lr)
    data_gen = torch.Generator().manual_seed(seed + 1)
    x_val, y_val = validation_set(T, eval_size)

    def evaluate() -> float:
        with torch.no_grad():
            return nn.functional.mse_loss(model(x_val), y_val).item()

    curve_steps, curve_mse = [0], [evaluate()]
    solved_at = None
    start = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = adding_batch(T, batch_size, data_gen)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Global-norm clipping (Pascanu et al. 2013): one exploding step must not undo the rest.
        clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if not math.isfinite(loss.item()):
            curve_steps.append(step)
            curve_mse.append(float("nan"))
            break
        if step % eval_every == 0 or step == steps:
            mse = evaluate()
            curve_steps.append(step)
            curve_mse.append(mse)
            if mse < SOLVED_MSE:  # solved: stop here, the budget is for finding the solution
                solved_at = step
                break
    finite = [m for m in curve_mse if math.isfinite(m)]
    return {
        "steps": curve_steps,
        "val_mse": curve_mse,
        "final_mse": curve_mse[-1],
        "best_mse": min(finite) if finite else float("nan"),
        "solved_at_step": solved_at,
        "seconds": time.perf_counter() - start,
    }


def settings(quick: bool, seed: int) -> tuple[tuple[int, ...], dict]:
    """The lengths and the configuration: the same budget of time steps for every run."""
    if quick:
        lengths = (10, 20)
        cfg = dict(step_budget=400, batch_size=16, hidden_size=16, eval_every=10, eval_size=128)
    else:  # 15 runs of 120,000 time steps each
        lengths = (50, 100, 200)
        cfg = dict(step_budget=120_000, batch_size=64, hidden_size=64, eval_every=50, eval_size=1000)
    return lengths, cfg | dict(lr=2e-3, clip=1.0, seed=seed)


def plot(results: dict, lengths: tuple[int, ...], cfg: dict, out: Path) -> Path:
    """Validation MSE against updates, one panel per length."""
    fig, axes = new_figure(len(lengths), width=5.0, height=4.0)
    for ax, T in zip(axes, lengths, strict=True):
        for label, r in results[str(T)].items():
            ax.semilogy(r["steps"], r["val_mse"], label=label)
        ax.axhline(BASELINE_MSE, color="k", ls="--", lw=0.8, label="baseline: predict 1 (0.167)")
        ax.axhline(SOLVED_MSE, color="k", ls=":", lw=0.8, label="solved: MSE 0.01")
        ax.set_title(f"Adding problem, T = {T} ({cfg['step_budget'] // T} updates)")
        ax.set_xlabel(f"update (batch of {cfg['batch_size']} sequences)")
        ax.set_ylabel("validation MSE (log scale)")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].legend(fontsize=7, loc="lower left")
    return save(fig, out / "adding.png")


def summarise(numbers: dict) -> str:
    """The markdown summary: the setting and the best MSE per init and length."""
    cfg, lengths, results = numbers["config"], numbers["lengths"], numbers["results"]
    val_baseline = numbers["val_baseline_mse"]
    rows = [["predict 1 (baseline)", *(f"{fmt(val_baseline[str(T)])}" for T in lengths)]]
    for label, *_ in CASES:
        row = [label]
        for T in lengths:
            r = results[str(T)][label]
            solved = f"step {r['solved_at_step']}" if r["solved_at_step"] else "no"
            row.append(f"{fmt(r['best_mse'])} ({solved})")
        rows.append(row)
    return "\n".join(
        [
            "# adding: which initialisations learn the adding problem",
            "",
            f"One-layer RNN, H = {cfg['hidden_size']}, linear readout of h_T; Adam "
            f"(scratchrnn.core.optim, lr {cfg['lr']}), "
            f"global-norm clipping at {cfg['clip']}, batch {cfg['batch_size']}. Every run gets the same "
            f"budget of {cfg['step_budget']:,} time steps: "
            + ", ".join(f"{cfg['step_budget'] // T} updates at T = {T}" for T in lengths)
            + f"; a run stops once solved. Validation on {cfg['eval_size']} fixed sequences every "
            f"{cfg['eval_every']} updates. Baseline (always 1): MSE {fmt(BASELINE_MSE)}; solved: "
            f"MSE < {SOLVED_MSE}.",
            "",
            "Best validation MSE (and the update at which it fell below 0.01, if it did):",
            "",
            md_table(["init", *(f"T = {T}" for T in lengths)], rows),
            "",
            f"Training time, all {len(results) * len(CASES)} runs: {numbers['total_seconds']:.0f} s "
            "(one thread).",
            "",
            "![adding](adding.png)",
        ]
    )


def run(out: str | Path, quick: bool = False, seed: int = 0) -> LabResult:
    """Train every init of :data:`CASES` at each length; write the curves and summary to ``out``.

    The budget is the same number of time steps (updates × T) for every run, so a run at T = 200
    gets a quarter of the updates of one at T = 50 and about the same time: an RNN update costs
    time proportional to T.
    """
    out = prepare_out(out)
    lengths, cfg = settings(quick, seed)
    train_cfg = {k: v for k, v in cfg.items() if k != "step_budget"}
    results = {
        str(T): {case[0]: train(T, case, steps=cfg["step_budget"] // T, **train_cfg) for case in CASES}
        for T in lengths
    }
    fig_path = plot(results, lengths, cfg, out)
    # Always predicting 1 on these very sequences: the baseline each curve starts against.
    val_baseline = {
        str(T): ((validation_set(T, cfg["eval_size"])[1] - 1) ** 2).mean().item() for T in lengths
    }
    numbers = {
        "lengths": list(lengths),
        "config": cfg,
        "baseline_mse": BASELINE_MSE,
        "val_baseline_mse": val_baseline,
        "solved_mse": SOLVED_MSE,
        "results": results,
        "solved": {T: [k for k, r in results[T].items() if r["solved_at_step"]] for T in results},
        "total_seconds": sum(r["seconds"] for rs in results.values() for r in rs.values()),
    }
    return finish("adding", out, numbers, summarise(numbers), [fig_path])
