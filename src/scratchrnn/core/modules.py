"""The modules: torch.nn.RNN's and torch.nn.RNNCell's interface over the math of
:mod:`scratchrnn.core.functional` (through the operators of :mod:`scratchrnn.core.ops`)."""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from scratchrnn.core.functional import dropout_masks
from scratchrnn.core.ops import RNNConfig, rnn

__all__ = ["RNN", "RNNCell", "convert"]

_ACTIVATIONS = ("tanh", "relu")

# --------------------------------------------------------------------------------------------
# The modules: torch.nn.RNN's and torch.nn.RNNCell's interface over the math above.
# --------------------------------------------------------------------------------------------


def _check_size(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be greater than zero, got {value}")


def _check_nonlinearity(nonlinearity) -> None:
    if nonlinearity not in _ACTIVATIONS:
        raise ValueError(
            f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
        )


class RNN(nn.Module):
    r"""A multi-layer Elman RNN with tanh or ReLU, a drop-in for :class:`torch.nn.RNN`.

    For each element of the input sequence, each layer computes

        h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)

    where x_t is the input at time t for the first layer and the previous layer's output h_t
    (after dropout, in training) for the others. Forward and backward are the hand-written
    functions of :mod:`scratchrnn.core.functional`; the gradients are exact, not autograd's.

    Args:
        input_size: D, the number of features of x_t.
        hidden_size: H, the number of features of h_t.
        num_layers: the number of stacked layers. Default: 1.
        nonlinearity: ``'tanh'`` or ``'relu'``. Default: ``'tanh'``.
        bias: if False, no b_ih and b_hh. Default: True.
        batch_first: if True, input and output are (N, T, feature); hx and h_n stay
            (layers * dirs, N, H). Default: False.
        dropout: if non-zero, dropout with this probability on the outputs of every layer but
            the last, in training only. Default: 0.
        bidirectional: if True, each layer also runs from the last step to the first, and its
            output is [forward | reverse] on the last dimension. Default: False.
        device, dtype: where and in what type to create the parameters.

    Inputs: input, hx
        - **input**: (T, N, D), (N, T, D) with ``batch_first``, (T, D) unbatched, or a
          :class:`~torch.nn.utils.rnn.PackedSequence`.
        - **hx**: (num_layers * dirs, N, H), or (num_layers * dirs, H) unbatched; zeros if omitted.

    Outputs: output, h_n
        - **output**: (T, N, dirs * H) (or (N, T, dirs * H), (T, dirs * H), or a PackedSequence):
          h_t of the last layer, both directions.
        - **h_n**: (num_layers * dirs, N, H): each layer's and direction's final state, indexed
          layer * dirs + direction; with packed input, taken at each sequence's own last step.

    Attributes:
        weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and ``_reverse``): shaped,
        named, ordered and initialised (U(−1/√H, 1/√H)) exactly like nn.RNN's, so the same seed
        gives the same weights and state_dicts load both ways.

    Example:
        >>> rnn = RNN(10, 20, num_layers=2)
        >>> output, h_n = rnn(torch.randn(5, 3, 10))  # (5, 3, 20), (2, 3, 20)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        **kwargs,
    ) -> None:
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if kwargs:
            raise TypeError(f"RNN got unexpected keyword arguments: {sorted(kwargs)}")
        super().__init__()
        _check_nonlinearity(nonlinearity)
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of "
                f"an element being zeroed, got {dropout!r}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=2,
            )
        for name, flag in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} should be of type bool, got: {type(flag).__name__}")
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        _check_size("num_layers", num_layers)

        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        self.nonlinearity = nonlinearity
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        factory = {"device": device, "dtype": dtype}
        dirs = 2 if bidirectional else 1
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(dirs):
                layer_input_size = input_size if layer == 0 else hidden_size * dirs
                suffix = "_reverse" if direction == 1 else ""
                shapes = {
                    f"weight_ih_l{layer}{suffix}": (hidden_size, layer_input_size),
                    f"weight_hh_l{layer}{suffix}": (hidden_size, hidden_size),
                }
                if bias:
                    shapes[f"bias_ih_l{layer}{suffix}"] = (hidden_size,)
                    shapes[f"bias_hh_l{layer}{suffix}"] = (hidden_size,)
                for name, shape in shapes.items():
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._flat_weights_names.extend(shapes)
                self._all_weights.append(list(shapes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) for every parameter, in registration order (as nn.RNN does)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters grouped per layer and direction, as nn.RNN's ``all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op, kept for nn.RNN compatibility (only cuDNN needs flat weights)."""

    _ARGUMENTS = ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first",
                  "dropout", "bidirectional")

    @classmethod
    def from_torch(cls, rnn: nn.RNN) -> RNN:
        """Ours, with the same arguments, weights (copied), device, dtype and training mode."""
        return _swapped(cls, rnn, cls._ARGUMENTS)

    def to_torch(self) -> nn.RNN:
        """The equivalent :class:`torch.nn.RNN` (weights copied): for TorchScript, or cuDNN."""
        return _swapped(nn.RNN, self, self._ARGUMENTS)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    def _check_input(self, x: Tensor, hx: Tensor, expected_dim: int, N: int) -> None:
        weight = self.weight_ih_l0
        autocast = torch._C._is_any_autocast_enabled()  # mixed dtypes: autocast casts them (as nn.RNN)
        if x.dtype != weight.dtype and not autocast:
            raise ValueError(
                f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: model.to({x.dtype})"
            )
        if x.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {x.dim()}")
        if x.size(-1) != self.input_size:
            raise RuntimeError(
                "input.size(-1) must be equal to input_size. "
                f"Expected {self.input_size}, got {x.size(-1)}"
            )
        dirs = 2 if self.bidirectional else 1
        expected = (self.num_layers * dirs, N, self.hidden_size)
        if hx.shape != expected:
            raise RuntimeError(f"Expected hidden size {expected}, got {list(hx.shape)}")
        if hx.dtype != weight.dtype and not autocast:
            raise RuntimeError(f"Expected hx of dtype {weight.dtype}, got {hx.dtype}")

    def forward(self, input, hx: Tensor | None = None):
        dirs = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes_t, sorted_indices, unsorted_indices = input
            T, N = len(batch_sizes_t), int(batch_sizes_t[0]) if len(batch_sizes_t) else 0
            if hx is not None and sorted_indices is not None:
                hx = hx.index_select(1, sorted_indices)  # hx follows the caller's batch order
            expected_dim = 2
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead"
                )
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1)  # (T, 1, D): unbatched ignores batch_first
            if batched and self.batch_first:
                x = x.transpose(0, 1)  # time-major (T, N, D)
            if hx is not None and hx.dim() != (3 if batched else 2):
                raise RuntimeError(
                    f"For {'batched 3' if batched else 'unbatched 2'}-D input, hx should also be "
                    f"{3 if batched else 2}-D but got {hx.dim()}-D tensor"
                )
            if hx is not None and not batched:
                hx = hx.unsqueeze(1)
            T, N = x.shape[0], x.shape[1]
            expected_dim = 3
        if hx is None:
            hx = x.new_zeros(self.num_layers * dirs, N, self.hidden_size)
        self._check_input(x, hx, expected_dim, N)
        if T == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN, got 0")

        dropout = self.dropout if self.training else 0.0
        masks = dropout_masks(x, dirs * self.hidden_size, self.num_layers, dropout)
        config = RNNConfig(self.num_layers, self.bidirectional, self.bias, self.nonlinearity)
        output, h_n = rnn(x, hx, self._flat_weights, masks, batch_sizes_t if packed else None, config)

        if packed:
            if unsorted_indices is not None:
                h_n = h_n.index_select(1, unsorted_indices)
            return PackedSequence(output, batch_sizes_t, sorted_indices, unsorted_indices), h_n
        if not batched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n


class RNNCell(nn.Module):
    r"""One step of an Elman RNN, a drop-in for :class:`torch.nn.RNNCell`.

        h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)        (or relu)

    It is the T = 1 case of :class:`RNN` and runs through the same hand-written forward and
    backward.

    Args:
        input_size: D. hidden_size: H. bias: use b_ih and b_hh (default True).
        nonlinearity: ``'tanh'`` (default) or ``'relu'``. device, dtype: for the parameters.

    Inputs: input (N, D) or (D), hx (N, H) or (H) (zeros if omitted).
    Outputs: h' (N, H) or (H).

    Attributes: weight_ih (H, D), weight_hh (H, H), bias_ih (H), bias_hh (H), initialised
    U(−1/√H, 1/√H) in that order, as nn.RNNCell's.

    Example:
        >>> cell = RNNCell(10, 20)
        >>> h = cell(torch.randn(3, 10))  # (3, 20)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        _check_nonlinearity(nonlinearity)
        _check_size("input_size", input_size)
        _check_size("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.nonlinearity = nonlinearity
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(−1/√H, 1/√H) for every parameter, in registration order (as nn.RNNCell does)."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    _ARGUMENTS = ("input_size", "hidden_size", "bias", "nonlinearity")

    @classmethod
    def from_torch(cls, cell: nn.RNNCell) -> RNNCell:
        """Ours, with the same arguments, weights (copied), device, dtype and training mode."""
        return _swapped(cls, cell, cls._ARGUMENTS)

    def to_torch(self) -> nn.RNNCell:
        """The equivalent :class:`torch.nn.RNNCell` (weights copied)."""
        return _swapped(nn.RNNCell, self, self._ARGUMENTS)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.nonlinearity != "tanh":
            s += ", nonlinearity={nonlinearity}"
        return s.format(**self.__dict__)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        if input.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        _check_nonlinearity(self.nonlinearity)
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)  # (N, D)
        N = x.shape[0]
        if hx is None:
            hx = x.new_zeros(N, self.hidden_size)
        elif not batched:
            hx = hx.unsqueeze(0)
        if x.shape[1] != self.input_size:
            raise RuntimeError(
                f"RNNCell: Expected input with {self.input_size} features, got {x.shape[1]}"
            )
        if hx.shape != (N, self.hidden_size):
            raise RuntimeError(
                f"RNNCell: Expected hidden of shape {(N, self.hidden_size)}, got {tuple(hx.shape)}"
            )
        if (x.dtype != self.weight_ih.dtype or hx.dtype != self.weight_ih.dtype) and \
                not torch._C._is_any_autocast_enabled():  # mixed dtypes: autocast casts them
            raise RuntimeError(
                f"RNNCell: Expected input and hidden of dtype {self.weight_ih.dtype}, "
                f"got {x.dtype} and {hx.dtype}"
            )
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        weights = [p for p in params if p is not None]
        config = RNNConfig(1, False, self.bias, self.nonlinearity)
        h, _ = rnn(x.unsqueeze(0), hx.unsqueeze(0), weights, [], None, config)  # T = 1
        return h[0] if batched else h[0, 0]


def _swapped(cls: type[nn.Module], module: nn.Module, arguments: tuple[str, ...]) -> nn.Module:
    """A ``cls`` built with ``module``'s constructor arguments, holding a copy of its weights."""
    weight = next(module.parameters())
    new = cls(**{name: getattr(module, name) for name in arguments},
              device=weight.device, dtype=weight.dtype)
    new.load_state_dict(module.state_dict())
    for p_new, p in zip(new.parameters(), module.parameters(), strict=True):  # same order
        p_new.requires_grad_(p.requires_grad)
    return new.train(module.training)


_OURS = {nn.RNN: RNN, nn.RNNCell: RNNCell}


def convert(module: nn.Module, to: str = "scratchrnn") -> nn.Module:
    """Swap every :class:`torch.nn.RNN` / :class:`torch.nn.RNNCell` inside ``module`` for ours
    (``to="scratchrnn"``), or every one of ours for torch's (``to="torch"``), weights kept.

    The swap is in place; the module is returned (the replacement, when ``module`` itself is one).

    Example:
        >>> model = convert(nn.Sequential(nn.RNN(10, 20)))  # model[0] is a scratchrnn.RNN
    """
    if to not in ("scratchrnn", "torch"):
        raise ValueError(f"to must be 'scratchrnn' or 'torch', got {to!r}")
    if to == "scratchrnn" and type(module) in _OURS:
        return _OURS[type(module)].from_torch(module)
    if to == "torch" and isinstance(module, (RNN, RNNCell)):
        return module.to_torch()
    for name, child in module.named_children():
        setattr(module, name, convert(child, to))
    return module
