"""The settings of a training run, declared once: :class:`TrainConfig`.

Each field is declared with :func:`setting` — its default, a help line, the group of flags it
belongs to (torch-rnn's: data / model / optimisation / output) and, where it has them, its
choices. ``scratchrnn train`` generates its flags from these declarations, so the command line and
the Python API cannot drift apart; :meth:`TrainConfig.validate` checks every value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from scratchrnn.core import optim
from scratchrnn.core.cells.activations import BUILT_IN
from scratchrnn.core.options import check_probability

__all__ = ["BACKENDS", "GROUPS", "LEGACY_DEFAULTS", "MAX_SAMPLE_LENGTH", "RESUME_CHANGEABLE", "SEED_MAX",
           "TrainConfig", "check_count", "setting"]

BACKENDS = ("scratch", "torch")
CELLS = ("rnn", "gru")
NONLINEARITIES = tuple(BUILT_IN)
_OPTIONS = {"nonlinearity": "tanh", "layer_norm": False, "recurrent_dropout": 0.0, "weight_drop": 0.0,
            "zoneout": 0.0}
GROUPS = ("data", "model", "optimisation", "output")
# Settings whose default changed, with the value a run saved before had when it did not record them.
LEGACY_DEFAULTS = {"cell": "rnn"}
# What may differ from the saved settings when a run is resumed: the stopping rule and the
# output's cadence. Everything else fixes the model, the data or the updates.
RESUME_CHANGEABLE = ("max_steps", "time_budget", "out", "eval_interval", "eval_streams", "log_interval",
                     "sample_length", "progress", "allow_data_change", "checkpoint_interval",
                     "checkpoint_seconds")
SEED_MAX = 2**64 - 1  # torch.manual_seed takes a 64-bit seed
MAX_SAMPLE_LENGTH = 10**7  # characters of one sample: ~80 MB of ids, hours of sampling
_FLOAT32_MAX = 3.4028234663852886e38  # the updates run in float32: larger factors overflow


def setting(default, help: str, group: str, choices: tuple[str, ...] | None = None):
    """A TrainConfig field: its default, a help line, its group of flags and its choices."""
    assert group in GROUPS, group
    return field(default=default, metadata={"help": help, "group": group, "choices": choices})


def check_count(name: str, value, zero_ok: bool = False) -> None:
    """Raise ValueError unless ``value`` is an int (not a bool) ≥ 1 (≥ 0 with ``zero_ok``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero_ok else 1):
        kind = "a non-negative" if zero_ok else "a positive"
        raise ValueError(f"{name} must be {kind} integer, got {value!r}")


@dataclass
class TrainConfig:
    """Every setting of a training run, with the defaults of ``scratchrnn train``.

    The defaults are the best settings found for 180 s of training on a 2-core CPU
    (see docs/benchmarks.md, "The language model").
    """

    data: str | None = setting(None, "UTF-8 text file (None: the bundled tiny Shakespeare)", "data")
    allow_data_change: bool = setting(False, "with --resume: go on although the data file changed since "
                                      "the run saved its checkpoint (said in the log)", "data")
    embedding_dim: int = setting(64, "E; 0 for one-hot input", "model")
    hidden_size: int = setting(640, "H, hidden units", "model")
    num_layers: int = setting(1, "L, stacked RNN layers", "model")
    dropout: float = setting(0.0, "on every RNN layer's output", "model")
    # The cell and the options of docs/options.md. The GRU is the default since `scratchrnn lab
    # options` measured it lowest in make run's 180 s (docs/img/options); the options default to none.
    cell: str = setting("gru", "the recurrent cell (rnn: the tutorial's Elman RNN)", "model", choices=CELLS)
    nonlinearity: str = setting("tanh", "the rnn cell's f", "model", choices=NONLINEARITIES)
    layer_norm: bool = setting(False, "normalise the rnn cell's summed inputs (Ba et al.)", "model")
    recurrent_dropout: float = setting(0.0, "dropout on h_{t-1} into W_hh, one mask per chunk (rnn)", "model")
    weight_drop: float = setting(0.0, "DropConnect on W_hh, one mask per chunk", "model")
    zoneout: float = setting(0.0, "probability that a unit keeps its previous value at a step", "model")
    optimizer: str = setting("adam", "the update rule", "optimisation", choices=tuple(optim.OPTIMIZERS))
    lr: float = setting(3e-3, "peak learning rate", "optimisation")
    weight_decay: float = setting(0.0, "L2 (AdamW: decoupled)", "optimisation")
    momentum: float = setting(0.9, "SGD's momentum", "optimisation")
    warmup_steps: int = setting(100, "linear warm-up steps", "optimisation")
    min_lr_ratio: float = setting(0.1, "the cosine decays the lr to this fraction of its peak",
                                  "optimisation")
    clip: float = setting(5.0, "max global gradient norm (0: off)", "optimisation")
    batch_size: int = setting(
        64, "N, parallel streams in all (global): under torchrun each of K processes trains on N/K "
        "of them (K must divide N); the batch means the same for any K", "optimisation")
    seq_len: int = setting(64, "T, steps of truncated BPTT", "optimisation")
    max_steps: int | None = setting(
        None, "stop after this many steps (None: no limit); on the command line, given without "
        "--time-budget, the only limit", "optimisation")
    time_budget: float | None = setting(
        180.0, "stop after this many seconds of training and evaluation (0: no limit; off when "
        "--max-steps is given alone)", "optimisation")
    seed: int = setting(0, f"random seed, 0 … {SEED_MAX}", "optimisation")
    backend: str = setting("scratch", "ours, or torch: the same model on nn.RNN + autograd + torch.optim",
                           "optimisation", choices=BACKENDS)
    out: str = setting("runs/charlm", "run directory", "output")
    eval_interval: int = setting(500, "steps between validation, checkpoint and sample", "output")
    checkpoint_interval: int = setting(
        100, "steps between checkpoints besides the validations' (0: only those); a fault costs at most "
        "this many steps", "output")
    checkpoint_seconds: float = setting(
        0.0, "also checkpoint once this many seconds of training have passed since the last checkpoint "
        "(0: off)", "output")
    eval_streams: int = setting(32, "parallel streams when validating", "output")
    log_interval: int = setting(10, "steps between train-loss records in log.jsonl", "output")
    sample_length: int = setting(300, "characters sampled after each evaluation (0: none)", "output")
    progress: bool = setting(True, "show a progress bar on a terminal", "output")

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        for name in ("hidden_size", "num_layers", "batch_size", "seq_len", "eval_interval", "eval_streams",
                     "log_interval"):
            check_count(name, getattr(self, name))
        for name in ("embedding_dim", "warmup_steps", "sample_length", "checkpoint_interval"):
            check_count(name, getattr(self, name), zero_ok=True)
        if self.sample_length > MAX_SAMPLE_LENGTH:
            raise ValueError(f"sample_length must be at most {MAX_SAMPLE_LENGTH:,}, "
                             f"got {self.sample_length:,}")
        if self.max_steps is not None:
            check_count("max_steps", self.max_steps)
        if not (isinstance(self.checkpoint_seconds, (int, float)) and math.isfinite(self.checkpoint_seconds)
                and self.checkpoint_seconds >= 0):
            raise ValueError(f"checkpoint_seconds must be ≥ 0, got {self.checkpoint_seconds!r}")
        if self.time_budget is not None and not (math.isfinite(self.time_budget) and self.time_budget >= 0):
            raise ValueError(f"time_budget must be a non-negative number of seconds, got {self.time_budget}")
        if not self.max_steps and not self.time_budget:
            raise ValueError("give max_steps or time_budget: without either, training never ends")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= SEED_MAX:
            raise ValueError(f"seed must be an integer from 0 to {SEED_MAX}, got {self.seed!r}")
        if not 0 < self.lr < 1e9:  # above, steps overflow float32 before any loss is seen
            raise ValueError(f"lr must be > 0 (and below 1e9), got {self.lr}")
        for name in ("optimizer", "backend", "cell", "nonlinearity"):
            choices = TrainConfig.__dataclass_fields__[name].metadata["choices"]
            if getattr(self, name) not in choices:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose from {', '.join(choices)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("recurrent_dropout", "weight_drop", "zoneout"):
            check_probability(name, getattr(self, name))
        for name, default in _OPTIONS.items():
            if getattr(self, name) == default:
                continue
            if self.backend == "torch":
                raise ValueError(f"{name}: backend torch (nn.RNN/nn.GRU) has none; expected "
                                 f"{default!r}, got {getattr(self, name)!r}")
            if self.cell == "gru" and name in ("nonlinearity", "layer_norm", "recurrent_dropout"):
                raise ValueError(f"{name}: the gru cell takes none (it is the rnn cell's: add --cell rnn); "
                                 f"expected {default!r}, got {getattr(self, name)!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("weight_decay", "momentum", "clip"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be ≥ 0, got {value}")
            if value > _FLOAT32_MAX:
                raise ValueError(f"{name} must be at most {_FLOAT32_MAX:.3g} (the updates run in float32), "
                                 f"got {value:g}")
