r"""The options of issue 19 on the modules: more nonlinearities, ``layer_norm``,
``recurrent_dropout``, ``weight_drop`` and ``zoneout`` (equations in docs/options.md).

Each is a cell or a cell option (:mod:`scratchrnn.core.cells.options`), chosen per call by name,
except ``weight_drop``, which is W̃_hh = W_hh ⊙ M / (1 − p) made here before the call: the
operators see W̃_hh as the weight and autograd turns their dW̃_hh into dW_hh = dW̃_hh ⊙ M / (1 − p)
(one elementwise product), so the C loop still runs. With the defaults nothing changes: the cell,
the parameters and the state_dict are nn.RNN's (nn.GRU's).

The masks are drawn here, outside the operators, from torch's generator, in this order after the
dropout masks between layers: the weight-drop masks (one per W_hh, in parameter order), then for
each layer and direction (layer-major, forward first) the recurrent-dropout mask (N, H), then the
zoneout mask (the input's leading shape × H). So ``torch.manual_seed`` before a call makes it
reproducible, and a reference that draws in the same order sees the same masks.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from scratchrnn.core import cells
from scratchrnn.core.cells.activations import BUILT_IN, Activation
from scratchrnn.core.cells.options import Options
from scratchrnn.core.stack import Layout

__all__ = ["CellOptionsMixin", "OptionsMixin", "check_probability", "elman_cell_name", "options_cell"]

_DEFAULTS = {"layer_norm": False, "recurrent_dropout": 0.0, "weight_drop": 0.0, "zoneout": 0.0}


def check_probability(name: str, p) -> float:
    """p as a float in [0, 1), or one TypeError / ValueError naming the argument, the range, p."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} should be a number in range [0, 1), got {p!r} of type {type(p).__name__}")
    if not 0 <= p < 1:
        raise ValueError(f"{name} should be a number in range [0, 1) representing a probability, got {p!r}")
    return float(p)


def elman_cell_name(nonlinearity) -> str:
    """The registered Elman cell of a nonlinearity (a built-in's name or an :class:`Activation`),
    registering a user's Activation on first use."""
    if isinstance(nonlinearity, Activation):
        name = f"rnn_{nonlinearity.name}"
        known = cells.CELLS.get(name)
        if known is None:
            cells.register(cells.Elman(nonlinearity))
        elif getattr(known, "activation", None) is not nonlinearity:
            raise ValueError(f"nonlinearity: a different Activation named {nonlinearity.name!r} is "
                             "registered already; expected a new name (Activation(f, df, name=...))")
        return name
    if isinstance(nonlinearity, str) and nonlinearity in BUILT_IN:
        return f"rnn_{nonlinearity}"
    raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from "
                     f"{', '.join(map(repr, BUILT_IN))} or a scratchrnn.Activation.")


def options_cell(base: str, ln: bool, rd: bool, zo: bool) -> cells.Cell:
    """The cell ``base`` with these options, registered on first use (``rnn_tanh+ln+zo``...)."""
    if not (ln or rd or zo):
        return cells.get(base)
    name = base + "+ln" * ln + "+rd" * rd + "+zo" * zo
    if name not in cells.CELLS:
        cells.register(Options(cells.get(base), ln, rd, zo))
    return cells.CELLS[name]


class OptionsMixin:
    """The options' arguments, parameters and per-call inputs, for :class:`~scratchrnn.RNN` and
    :class:`~scratchrnn.GRU` (before ``_Stacked`` in their bases)."""

    # Class-level defaults: a module pickled before these options existed unpickles without them.
    layer_norm, recurrent_dropout, weight_drop, zoneout = False, 0.0, 0.0, 0.0
    _ln_names = ()  # each module with layer norm assigns its own list (no annotation: TorchScript)

    def __init__(self, *args, layer_norm: bool = False, recurrent_dropout: float = 0.0,
                 weight_drop: float = 0.0, zoneout: float = 0.0, **kwargs) -> None:
        if not isinstance(layer_norm, bool):
            raise TypeError(f"layer_norm should be a bool, got {layer_norm!r} of type "
                            f"{type(layer_norm).__name__}")
        probabilities = {name: check_probability(name, p) for name, p in (
            ("recurrent_dropout", recurrent_dropout), ("weight_drop", weight_drop), ("zoneout", zoneout))}
        super().__init__(*args, **kwargs)
        self.layer_norm = layer_norm
        self.recurrent_dropout = probabilities["recurrent_dropout"]
        self.weight_drop = probabilities["weight_drop"]
        self.zoneout = probabilities["zoneout"]
        for option, value in (("layer_norm", layer_norm), ("recurrent_dropout", self.recurrent_dropout)):
            if value and self._base_cell_name() == "gru":
                raise ValueError(f"{option}: the 'gru' cell has no single summed input to apply it to; "
                                 f"expected {_DEFAULTS[option]} (an RNN), got {value!r}")
        for rd in {False, self.recurrent_dropout > 0}:  # registered now: a forward under
            options_cell(self._base_cell_name(), layer_norm, rd, self.zoneout > 0)  # Dynamo only looks up
        self._ln_names = []
        if layer_norm:
            self._register_layer_norm()

    def _base_cell_name(self) -> str:
        return "gru" if self.mode == "GRU" else elman_cell_name(self.nonlinearity)

    @property
    @torch.jit.unused
    def cell_name(self) -> str:
        """The registered cell this module runs now (recurrent dropout only in training)."""
        rd = self.training and self.recurrent_dropout > 0
        return options_cell(self._base_cell_name(), self.layer_norm, rd, self.zoneout > 0).name

    def _register_layer_norm(self) -> None:
        """γ, β per layer and direction, each pair right after its layer and direction's nn
        parameters in the registration order (so in parameters() and the state_dict)."""
        cell = options_cell(self._base_cell_name(), True, False, False)
        weight = getattr(self, self._flat_weights_names[0])
        layout = Layout(self.num_layers, self.bidirectional, self.bias)
        order = []
        for layer, d, idx in layout.walk():
            suffix = layout.suffix(layer, d)
            order += [n for n in layout.weights(self._flat_weights_names, idx) if n is not None]
            for stem, shape in cell.extra_parameter_shapes(self.hidden_size).items():
                name = stem + suffix
                self.register_parameter(name, nn.Parameter(torch.empty(shape, device=weight.device,
                                                                       dtype=weight.dtype)))
                self._ln_names.append(name)
                order.append(name)
        self._parameters = {name: self._parameters[name] for name in order}
        self._reset_layer_norm()

    def _reset_layer_norm(self) -> None:
        cell = options_cell(self._base_cell_name(), True, False, False)
        for i in range(0, len(self._ln_names), 2):
            with torch.no_grad():
                cell.reset_extra_([getattr(self, n) for n in self._ln_names[i : i + 2]])

    def reset_parameters(self) -> None:
        """torch's init of nn's parameters (the same draws, in the same order); γ = 1, β = 0."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for name in self._flat_weights_names:
            nn.init.uniform_(getattr(self, name), -stdv, stdv)
        if getattr(self, "_ln_names", None):
            self._reset_layer_norm()

    @torch.jit.unused  # TorchScript cannot compile ours anyway; it fails as for a plain RNN
    def _call_inputs(self, x: Tensor, N: int) -> tuple[str, list[Tensor], list[Tensor]]:
        """(the cell's name, the weights, the cell's masks) for one call on time-major ``x``."""
        training = self.training
        weights = [getattr(self, name) for name in self._flat_weights_names]
        if training and self.weight_drop > 0:
            keep = 1 - self.weight_drop
            weights = [w * torch.empty_like(w).bernoulli_(keep).div_(keep) if name.startswith("weight_hh")
                       else w for name, w in zip(self._flat_weights_names, weights, strict=True)]
        rd = training and self.recurrent_dropout > 0
        weights += [getattr(self, name) for name in self._ln_names]
        masks = []
        H, p_rd, p_zo = self.hidden_size, self.recurrent_dropout, self.zoneout
        for _ in range(self.num_layers * (2 if self.bidirectional else 1)):
            if rd:
                masks.append(x.new_empty(N, H).bernoulli_(1 - p_rd).div_(1 - p_rd))
            if p_zo > 0:
                shape = (*x.shape[:-1], H)
                masks.append(x.new_empty(shape).bernoulli_(p_zo) if training
                             else x.new_full((1,) * len(shape), p_zo).expand(shape))
        return self.cell_name, weights, masks

    def to_torch(self) -> nn.Module:
        changed = {name: getattr(self, name) for name, default in _DEFAULTS.items()
                   if getattr(self, name) != default}
        if self.mode != "GRU" and self.nonlinearity not in ("tanh", "relu"):
            changed["nonlinearity"] = self.nonlinearity
        if changed:
            name, value = next(iter(changed.items()))
            raise ValueError(f"to_torch: torch.nn has no {name}; expected its default, got {value!r}")
        return super().to_torch()

    def extra_repr(self) -> str:
        s = super().extra_repr()
        for name, default in _DEFAULTS.items():
            if getattr(self, name, default) != default:
                s += f", {name}={getattr(self, name)}"
        return s


class CellOptionsMixin:
    """``layer_norm`` (RNNCell) and ``zoneout`` (both) for :class:`~scratchrnn.RNNCell` and
    :class:`~scratchrnn.GRUCell`: one call is one step, so zoneout draws its (N, H) mask per call
    (per step, as Krueger et al.); recurrent dropout and weight drop, whose mask must stay the same
    over a sequence's steps, are the stacked modules' (RNN, GRU). γ, β: ``ln_weight``, ``ln_bias``,
    registered after nn's parameters."""

    layer_norm, zoneout = False, 0.0
    _ln_names = ()

    def __init__(self, *args, layer_norm: bool = False, zoneout: float = 0.0, **kwargs) -> None:
        if not isinstance(layer_norm, bool):
            raise TypeError(f"layer_norm should be a bool, got {layer_norm!r} of type "
                            f"{type(layer_norm).__name__}")
        zoneout = check_probability("zoneout", zoneout)
        super().__init__(*args, **kwargs)
        if layer_norm and isinstance(self, nn.GRUCell):
            raise ValueError("layer_norm: the 'gru' cell has no single summed input to apply it to; "
                             "expected False (an RNNCell), got True")
        self.layer_norm, self.zoneout = layer_norm, zoneout
        if layer_norm or zoneout:
            base = self._cell_name()  # (RNNCell: its nonlinearity's cell, registered)
            cell = options_cell(base, layer_norm, False, zoneout > 0)
            self._ln_names = []
            weight = self.weight_ih
            for stem, shape in cell.extra_parameter_shapes(self.hidden_size).items():
                self.register_parameter(stem, nn.Parameter(torch.empty(shape, device=weight.device,
                                                                       dtype=weight.dtype)))
                self._ln_names.append(stem)
            self._reset_layer_norm(cell)

    def _reset_layer_norm(self, cell) -> None:
        if self._ln_names:
            with torch.no_grad():
                cell.reset_extra_([getattr(self, n) for n in self._ln_names])

    def reset_parameters(self) -> None:
        """torch's init of nn's parameters (the same draws, in order); γ = 1, β = 0."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if getattr(self, name, None) is not None:
                nn.init.uniform_(getattr(self, name), -stdv, stdv)
        if self._ln_names:
            self._reset_layer_norm(options_cell(self._cell_name(), True, False, self.zoneout > 0))

    @torch.jit.unused
    def _step_inputs(self, cell: str, x: Tensor) -> tuple[str, list[Tensor], list[Tensor]]:
        name = options_cell(cell, self.layer_norm, False, self.zoneout > 0).name
        masks = []
        if self.zoneout > 0:
            shape = (1, x.shape[0], self.hidden_size)  # (T = 1, N, H)
            masks.append(x.new_empty(shape).bernoulli_(self.zoneout) if self.training
                         else x.new_full((1, 1, 1), self.zoneout).expand(shape))
        return name, [getattr(self, n) for n in self._ln_names], masks

    def to_torch(self) -> nn.Module:
        for name, default in (("layer_norm", False), ("zoneout", 0.0)):
            if getattr(self, name) != default:
                raise ValueError(f"to_torch: torch.nn has no {name}; expected its default, got "
                                 f"{getattr(self, name)!r}")
        return super().to_torch()

    def extra_repr(self) -> str:
        s = super().extra_repr()
        for name, default in (("layer_norm", False), ("zoneout", 0.0)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s
