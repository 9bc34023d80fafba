"""The learning-rate schedule: a linear warm-up, then a cosine from the peak down to a floor.

``lr · min(1, (step + 1) / warmup) · (r + (1 − r)(1 + cos(π·progress))/2)``, r = ``min_lr_ratio``,
where progress ∈ [0, 1] is the fraction of the schedule done, counted in steps (``max_steps``) or
in seconds of training (``time_budget``), whichever runs out first.

The schedule's end is fixed when a run is created and saved in its checkpoints. A resumed run
keeps it by default: given a later end (a larger ``--max-steps`` or ``--time-budget``), the steps
past the schedule's end train at its floor, r × lr, as the run was planned. To train longer,
``--schedule extend`` re-plans the cosine over the new end instead, as if the run had been planned
to it from the start: the learning rate goes back up the cosine to that plan's value and decays to
the floor at the new end. A resume that changes the end says what it
does in one line. A run that has reached its end is finished: resuming it without a later end is
refused, naming every limit to raise.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

from scratchrnn.lm.config import TrainConfig

__all__ = ["SCHEDULES", "Schedule", "is_finished", "learning_rate", "resumed_schedule"]

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


SCHEDULES = ("keep", "extend")


def _limits_reached(config: TrainConfig, ckpt: dict) -> tuple[bool, bool, bool]:
    """(steps done, time done, same end as saved) for the run saved in ``ckpt`` under ``config``."""
    saved = ckpt["train_config"]
    step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    same_end = (config.max_steps, config.time_budget) == (saved.get("max_steps"), saved.get("time_budget"))
    steps_done = bool(config.max_steps and step >= config.max_steps)
    # A run stops short of its budget by the last evaluation's duration (kept in reserve), so a
    # finished run with the same end is done by its clock even a fraction of a second under it.
    time_done = bool(config.time_budget and (elapsed >= config.time_budget
                                             or (ckpt.get("finished") and same_end and not steps_done)))
    return steps_done, time_done, same_end


def is_finished(config: TrainConfig, ckpt: dict) -> bool:
    """Whether the run saved in ``ckpt`` has nothing left to train under ``config``'s stopping rule."""
    steps_done, time_done, same_end = _limits_reached(config, ckpt)
    return steps_done or time_done or bool(ckpt.get("finished") and same_end)


def resumed_schedule(config: TrainConfig, ckpt: dict, run_dir: str | os.PathLike,
                     schedule: str = "keep") -> Schedule:
    """The schedule the run saved in ``ckpt`` continues with, as ``config`` resumes it.

    ``schedule`` "keep": the saved one (the steps past its end train at its floor); "extend": one
    that ends where ``config`` stops training, the cosine re-planned over the whole run as if it
    had been planned so from the start (the learning rate goes back up to the value that plan has
    at this point, then decays to the floor at the new end).

    Raises ValueError if the run is finished under ``config``'s stopping rule, naming every limit
    to raise; logs one line if the schedule changes or ends elsewhere than training does.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    saved = ckpt["train_config"]
    kept = Schedule(**ckpt.get("schedule") or
                    {"max_steps": saved.get("max_steps"), "time_budget": saved.get("time_budget")})
    step, elapsed = int(ckpt["step"]), float(ckpt["elapsed"])
    end = Schedule(config.max_steps, config.time_budget)
    steps_done, time_done, same_end = _limits_reached(config, ckpt)
    if is_finished(config, ckpt):
        raise_ = [f"a --max-steps above {step}"] if steps_done else []
        if time_done:
            raise_.append(f"a --time-budget above {max(elapsed, config.time_budget):.1f} (seconds; 0: none)")
        if not raise_:  # finished with neither limit (cannot happen: validate() requires one)
            raise_ = [f"a --max-steps above {step}"]
        raise ValueError(f"the run in {os.fspath(run_dir)} is finished (step {step}, {elapsed:.1f} s of "
                         f"training); pass {' and '.join(raise_)} with --resume to train it further")
    if schedule == "extend" and end != kept:
        log.info("resuming at step %d: the learning-rate schedule is re-planned to end at %s "
                 "(--schedule extend; it ended at %s): lr %.3g now, down to %.3g at the end",
                 step, end.describe(), kept.describe(),
                 learning_rate(config, step, end.progress(step, elapsed)), config.lr * config.min_lr_ratio)
        return end
    if not same_end:
        log.info("resuming at step %d: the learning-rate schedule still ends at %s, as the run began; "
                 "training now stops at %s, and any steps past the schedule's end use its floor, lr %.3g "
                 "(--schedule extend re-plans it)",
                 step, kept.describe(), end.describe(), config.lr * config.min_lr_ratio)
    return kept
