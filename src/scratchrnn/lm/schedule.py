"""The learning-rate schedule: a linear warm-up, then a cosine from the peak down to a floor.

``lr · min(1, (step + 1) / warmup) · (r + (1 − r)(1 + cos(π·progress))/2)``, r = ``min_lr_ratio``,
where progress ∈ [0, 1] is the fraction of the schedule done, counted in steps (``max_steps``) or
in seconds of training (``time_budget``), whichever runs out first.

The schedule's end is fixed when a run is created and saved in its checkpoints. A resumed run
keeps it: given a later end (a larger ``--max-steps`` or ``--time-budget``), the steps past the
schedule's end train at its floor, r × lr, rather than jumping back up the cosine; a resume that
changes the end says so in one line. A run that has reached its end is finished: resuming it
without a later end is refused, with what to pass.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from scratchrnn.lm.config import TrainConfig

__all__ = ["Schedule", "is_finished", "learning_rate", "resumed_schedule"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """Where the learning-rate schedule ends: a step, a number of seconds, or the earlier of both."""

    max_steps: int | None
    time_budget: float | None

    def progress(self, step: int, elapsed: float) -> float:
        """The fraction of the schedule done (≥ 1 past its end)."""
        done = [step / self.max_steps] if self.max_steps else []
        if self.time_budget:
            done.append(elapsed / self.time_budget)
        return max(done)

    def describe(self) -> str:
        ends = [f"step {self.max_steps}"] if self.max_steps else []
        ends += [f"{self.time_budget:g} s of training"] if self.time_budget else []
        return " or ".join(ends) + (", whichever comes first" if len(ends) > 1 else "")


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Warm-up then cosine: lr · min(1, (step + 1) / warmup) · (r + (1 − r)(1 + cos(π·progress))/2),
    progress ∈ [0, 1] the fraction of training done, r = min_lr_ratio."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    r = config.min_lr_ratio
    cosine = r + (1 - r) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return config.lr * warm * cosine


def is_finished(config: TrainConfig, ckpt: dict) -> bool:
    """Whether the run saved in ``ckpt`` has nothing left to train under ``config``'s stopping rule."""
    saved = ckpt["train_config"]
    step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    same_end = (config.max_steps, config.time_budget) == (saved.get("max_steps"), saved.get("time_budget"))
    return (bool(config.max_steps and step >= config.max_steps)
            or bool(config.time_budget and elapsed >= config.time_budget)
            or bool(ckpt.get("finished") and same_end))


def resumed_schedule(config: TrainConfig, ckpt: dict, run_dir: str | os.PathLike) -> Schedule:
    """The schedule of the run saved in ``ckpt``, which ``config`` resumes.

    Raises ValueError if the run is finished under ``config``'s stopping rule; logs one line if
    that rule ends training elsewhere than the schedule does.
    """
    saved = ckpt["train_config"]
    schedule = Schedule(**ckpt.get("schedule") or
                        {"max_steps": saved.get("max_steps"), "time_budget": saved.get("time_budget")})
    step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    end = (config.max_steps, config.time_budget)
    same_end = end == (saved.get("max_steps"), saved.get("time_budget"))
    steps_done = bool(config.max_steps and step >= config.max_steps)
    if is_finished(config, ckpt):
        if steps_done or not config.time_budget:
            more = f"a --max-steps above {step}"
        else:
            more = f"a --time-budget above {elapsed:.0f} (seconds)"
        raise ValueError(f"the run in {os.fspath(run_dir)} is finished (step {step}, {elapsed:.1f} s of "
                         f"training); pass {more} with --resume to train it further")
    if not same_end:
        log.info("resuming at step %d: the learning-rate schedule still ends at %s, as the run began; "
                 "training now stops at %s, and any steps past the schedule's end use its floor, lr %.3g",
                 step, schedule.describe(), Schedule(*end).describe(), config.lr * config.min_lr_ratio)
    return schedule
