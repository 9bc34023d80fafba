"""The modules: torch.nn's RNN, GRU, RNNCell and GRUCell over our hand-written stack, and
:class:`Recurrent` for a cell of one's own.

``scratchrnn.RNN`` and ``GRU`` are ``torch.nn.RNNBase`` subclasses, ``RNNCell`` and ``GRUCell``
subclasses of ``torch.nn.RNNCell`` and ``GRUCell``: torch's ``__init__`` gives the same parameters,
init, errors, ``_flat_weights``, ``all_weights``, ``flatten_parameters`` and ``__setstate__``, and
``isinstance(m, nn.RNNBase)`` / ``nn.RNNCellBase`` hold; only ``forward`` is ours: the operators of
:mod:`scratchrnn.core.ops` over the cell of :mod:`scratchrnn.core.cells` named by torch's ``mode``
(``RNN_TANH`` → ``rnn_tanh``, ``GRU`` → ``gru``). Their ``repr`` says ``scratchrnn.RNN(10, 20)``,
so that a printed model shows whose forward runs.

Why not subclasses of ``nn.RNN`` and ``nn.GRU`` themselves: torch.compile refuses to trace any
instance of those (and of nn.LSTM) unless ``torch._dynamo.config.allow_rnn`` is set, and setting it
from a library would change, for the whole process, how torch.compile treats the user's own
nn.LSTM and nn.GRU. The code that checks for an RNN by type checks ``nn.RNNBase`` (user code that
initialises or flattens every RNN) or exact types (``quantize_dynamic``, FLOP counters), which a
subclass of ``nn.RNN`` would not pass either; docs/dropin.md lists the places.
"""

from __future__ import annotations

import numbers
import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from scratchrnn.core import cells
from scratchrnn.core.functional import dropout_masks
from scratchrnn.core.ops import RNNConfig, rnn
from scratchrnn.core.options import CellOptionsMixin, OptionsMixin, elman_cell_name
from scratchrnn.core.stack import Layout

__all__ = ["GRU", "RNN", "GRUCell", "RNNCell", "Recurrent", "convert"]


def _dtype_error(a: torch.dtype, b: torch.dtype) -> str:
    """ATen's message for a product of two dtypes, which it prints as Float, Double, BFloat16..."""
    name = lambda dtype: torch.empty(0, dtype=dtype).type().removeprefix("torch.").removesuffix("Tensor")  # noqa: E731
    return f"mat1 and mat2 must have the same dtype, but got {name(a)} and {name(b)}"


class _Stacked:
    """The forward of a stack of cells over nn.RNNBase's interface, for RNN, GRU and Recurrent.

    Reads ``cell_name``, ``input_size``, ``hidden_size``, ``num_layers``, ``bias``,
    ``batch_first``, ``dropout``, ``bidirectional`` and ``_flat_weights_names``.
    """

    _dims_error = "RNN: Expected input to be 2D or 3D, got {}D tensor instead"  # torch's words

    def _get_name(self) -> str:
        return f"scratchrnn.{type(self).__name__}"

    @property
    def cell_name(self) -> str:
        """The registered cell this module runs: torch's ``mode`` in lower case."""
        return self.mode.lower()

    def _call_inputs(self, x: Tensor, N: int) -> tuple[str, list[Tensor], list[Tensor]]:
        """(the cell's name, the weights, the cell's masks) of a call: see core/options.py."""
        return self.cell_name, [getattr(self, name) for name in self._flat_weights_names], []

    def _check_input(self, x: Tensor, hx: Tensor, expected_dim: int, N: int) -> None:
        weight = getattr(self, self._flat_weights_names[0])
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
        if hx.dtype != weight.dtype and not autocast:  # torch's words: its first product is h_{t−1} W_hhᵀ
            raise RuntimeError(_dtype_error(hx.dtype, weight.dtype))
        for name in self._flat_weights_names:  # as nn.RNN, whose products mix no dtypes (b_ih + b_hh
            other = getattr(self, name)  # would promote a float32 bias silently): issue 18, the fuzz
            if other.dtype != weight.dtype:
                raise RuntimeError(f"Expected {name} of dtype {weight.dtype}, got {other.dtype}")

    def forward(self, input, hx: Tensor | None = None):
        dirs = 2 if self.bidirectional else 1
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes_t, sorted_indices, unsorted_indices = input
            T, N = len(batch_sizes_t), int(batch_sizes_t[0])  # IndexError for no steps, as nn's
            if hx is not None and sorted_indices is not None:
                hx = hx.index_select(1, sorted_indices)  # hx follows the caller's batch order
            expected_dim = 2
        else:
            if input.dim() not in (2, 3):
                raise ValueError(self._dims_error.format(input.dim()))
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
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

        dropout = self.dropout if self.training else 0.0
        masks = dropout_masks(x, dirs * self.hidden_size, self.num_layers, dropout)
        cell_name, weights, cell_masks = self._call_inputs(x, N)
        config = RNNConfig(self.num_layers, self.bidirectional, self.bias, cell_name)
        output, h_n = rnn(x, hx, weights, masks + cell_masks, batch_sizes_t if packed else None, config)

        if packed:
            if unsorted_indices is not None:
                h_n = h_n.index_select(1, unsorted_indices)
            return PackedSequence(output, batch_sizes_t, sorted_indices, unsorted_indices), h_n
        if not batched:
            return output.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n


class _Swappable:
    """``from_torch`` and ``to_torch`` for the drop-ins (their torch class in ``_THEIRS``)."""

    @classmethod
    def from_torch(cls, module: nn.Module) -> nn.Module:
        """Ours, with the same arguments, weights (copied), device, dtype and training mode."""
        return _swapped(cls, module, cls._ARGUMENTS)

    def to_torch(self) -> nn.Module:
        """The equivalent torch.nn module (weights copied): for TorchScript, or cuDNN."""
        return _swapped(_THEIRS[type(self)], self, self._ARGUMENTS)


class RNN(OptionsMixin, _Stacked, _Swappable, nn.RNNBase):
    r"""A multi-layer Elman RNN with tanh or ReLU, a drop-in for :class:`torch.nn.RNN` (an
    ``nn.RNNBase``, see the module docstring).

    For each element of the input sequence, each layer computes

        h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)

    where x_t is the input at time t for the first layer and the previous layer's output h_t
    (after dropout, in training) for the others. Forward and backward are the hand-written
    stack of :mod:`scratchrnn.core.functional` over the Elman cell
    (:mod:`scratchrnn.core.cells.elman`); the gradients are exact, not autograd's.

    Args:
        input_size: D, the number of features of x_t.
        hidden_size: H, the number of features of h_t.
        num_layers: the number of stacked layers. Default: 1.
        nonlinearity: ``'tanh'`` or ``'relu'`` (torch's), ``'gelu'``, ``'silu'``, ``'softsign'``,
            ``'sigmoid'``, ``'leaky_relu'`` or a :class:`scratchrnn.Activation` (ours: the
            PyTorch loop). Default: ``'tanh'``.
        bias: if False, no b_ih and b_hh. Default: True.
        batch_first: if True, input and output are (N, T, feature); hx and h_n stay
            (layers * dirs, N, H). Default: False.
        dropout: if non-zero, dropout with this probability on the outputs of every layer but
            the last, in training only. Default: 0.
        bidirectional: if True, each layer also runs from the last step to the first, and its
            output is [forward | reverse] on the last dimension. Default: False.
        device, dtype: where and in what type to create the parameters.
        layer_norm, recurrent_dropout, weight_drop, zoneout (keyword only): the options of
            docs/options.md; the defaults (False, 0, 0, 0) change nothing.

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
        weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and ``_reverse``): torch's own
        (nn.RNNBase's ``__init__`` makes them), so the same seed gives the same weights and
        state_dicts load both ways.

    Example:
        >>> rnn = RNN(10, 20, num_layers=2)
        >>> output, h_n = rnn(torch.randn(5, 3, 10))  # (5, 3, 20), (2, 3, 20)
    """

    _ARGUMENTS = ("input_size", "hidden_size", "num_layers", "nonlinearity", "bias", "batch_first",
                  "dropout", "bidirectional")

    def __init__(self, *args, **kwargs) -> None:
        # nn.RNN's own argument handling, in its words (we subclass nn.RNNBase, not nn.RNN).
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:  # nonlinearity is the fourth positional argument
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        # torch's two are torch's modes; ours (gelu, ..., an Activation) run as RNN_TANH's
        # parameters with our cell (options.py's cell_name), after the check naming all of them.
        modes = {"tanh": "RNN_TANH", "relu": "RNN_RELU"}
        mode = modes.get(self.nonlinearity) if isinstance(self.nonlinearity, str) else None
        if mode is None:
            elman_cell_name(self.nonlinearity)  # ValueError for one that is not ours either
        super().__init__(mode or "RNN_TANH", *args, **kwargs)


class GRU(OptionsMixin, _Stacked, _Swappable, nn.RNNBase):
    r"""A multi-layer GRU, a drop-in for :class:`torch.nn.GRU` (an ``nn.RNNBase``, see the module
    docstring), with hand-written BPTT.

    For each element of the input sequence, each layer computes (gates in r, z, n order)

        r_t = σ(x_t W_irᵀ + b_ir + h_{t−1} W_hrᵀ + b_hr)
        z_t = σ(x_t W_izᵀ + b_iz + h_{t−1} W_hzᵀ + b_hz)
        n_t = tanh(x_t W_inᵀ + b_in + r_t ⊙ (h_{t−1} W_hnᵀ + b_hn))
        h_t = (1 − z_t) ⊙ n_t + z_t ⊙ h_{t−1}

    (the reset gate after the recurrent product, as torch's and cuDNN's). The backward is the GRU
    cell's of :mod:`scratchrnn.core.cells.gru`.

    Args, inputs and outputs: as :class:`RNN`'s, without ``nonlinearity``, ``layer_norm`` and
    ``recurrent_dropout`` (no single summed input; ``weight_drop`` and ``zoneout`` apply); the weights are
    (3H, D), (3H, H), (3H,), (3H,) per layer and direction, torch's.

    Example:
        >>> gru = GRU(10, 20, num_layers=2, bidirectional=True)
        >>> output, h_n = gru(torch.randn(5, 3, 10))  # (5, 3, 40), (4, 3, 20)
    """

    _dims_error = "GRU: Expected input to be 2D or 3D, got {}D instead"
    _ARGUMENTS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                  "bidirectional")

    def __init__(self, *args, **kwargs) -> None:
        # nn.GRU's own argument handling, in its words (we subclass nn.RNNBase, not nn.GRU).
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)




class _OneStep:
    """The forward of a cell module (RNNCell, GRUCell): the T = 1 case of the stack, with torch's
    checks and messages."""

    def _get_name(self) -> str:
        return f"scratchrnn.{type(self).__name__}"

    def _step_inputs(self, cell: str, x: Tensor) -> tuple[str, list[Tensor], list[Tensor]]:
        """(the cell's name, its extra parameters, its masks) for a step on ``x`` (N, D)."""
        return cell, [], []

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        label = type(self).__name__
        if input.dim() not in (1, 2):
            raise ValueError(f"{label}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None and hx.dim() not in (1, 2):
            raise ValueError(f"{label}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)  # (N, D)
        if hx is None:
            hx = x.new_zeros(x.shape[0], self.hidden_size)
        elif not batched:
            hx = hx.unsqueeze(0)
        cell = self._cell_name()
        # ATen's checks, in its order and words (rnn_tanh_cell, gru_cell).
        if x.size(1) != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {x.size(1)} expected {self.input_size}"
            )
        if x.size(0) != hx.size(0):
            raise RuntimeError(f"Input batch size {x.size(0)} doesn't match hidden0 batch size {hx.size(0)}")
        if hx.size(1) != self.hidden_size:
            raise RuntimeError(
                f"hidden0 has inconsistent hidden_size: got {hx.size(1)}, expected {self.hidden_size}"
            )
        for a in (x, hx):
            if a.dtype != self.weight_ih.dtype and not torch._C._is_any_autocast_enabled():
                raise RuntimeError(_dtype_error(a.dtype, self.weight_ih.dtype))
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        weights = [p for p in params if p is not None]
        cell, extras, masks = self._step_inputs(cell, x)
        config = RNNConfig(1, False, self.bias, cell)
        h, _ = rnn(x.unsqueeze(0), hx.unsqueeze(0), weights + extras, masks, None, config)  # T = 1
        return h[0] if batched else h[0, 0]


class RNNCell(CellOptionsMixin, _OneStep, _Swappable, nn.RNNCell):
    r"""One step of an Elman RNN, a drop-in for :class:`torch.nn.RNNCell` (a subclass).

        h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)        (or relu)

    The T = 1 case of :class:`RNN`, through the same hand-written forward and backward.

    Args:
        input_size: D. hidden_size: H. bias: use b_ih and b_hh (default True).
        nonlinearity: ``'tanh'`` (default) or ``'relu'``. device, dtype: for the parameters.

    Inputs: input (N, D) or (D), hx (N, H) or (H) (zeros if omitted).
    Outputs: h' (N, H) or (H).

    Example:
        >>> cell = RNNCell(10, 20)
        >>> h = cell(torch.randn(3, 10))  # (3, 20)
    """

    _ARGUMENTS = ("input_size", "hidden_size", "bias", "nonlinearity")

    def _cell_name(self) -> str:
        try:
            return elman_cell_name(self.nonlinearity)  # torch's two, ours and an Activation
        except ValueError:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}") from None


class GRUCell(CellOptionsMixin, _OneStep, _Swappable, nn.GRUCell):
    r"""One step of a GRU, a drop-in for :class:`torch.nn.GRUCell` (a subclass): the T = 1 case
    of :class:`GRU` (equations there).

    Args:
        input_size: D. hidden_size: H. bias: use b_ih and b_hh (default True). device, dtype.

    Inputs: input (N, D) or (D), hx (N, H) or (H) (zeros if omitted).
    Outputs: h' (N, H) or (H).

    Example:
        >>> cell = GRUCell(10, 20)
        >>> h = cell(torch.randn(3, 10))  # (3, 20)
    """

    _ARGUMENTS = ("input_size", "hidden_size", "bias")

    def _cell_name(self) -> str:
        return "gru"


class Recurrent(_Stacked, nn.Module):
    r"""A stack of any cell: layers, both directions, packing, dropout between layers,
    torch.compile and torch.export, with nn.RNN's interface (a plain module: nn.RNNBase accepts
    only its own modes).

    Args:
        cell: a :class:`~scratchrnn.core.cells.Cell`, or the name of a registered one
            (``"rnn_tanh"``, ``"gru"``...). A cell object not yet registered is registered
            under its ``name``.
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, device,
        dtype: as for :class:`RNN`.

    Inputs and outputs: as :class:`RNN`'s. Parameters: the cell's (``parameter_shapes``), named
    and ordered as torch.nn's, initialised by the cell's ``reset_parameters_``.

    Example:
        >>> rnn = Recurrent("gru", 10, 20, num_layers=2)
        >>> output, h_n = rnn(torch.randn(5, 3, 10))  # (5, 3, 20), (2, 3, 20)
    """

    _ARGUMENTS = ("cell", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                  "bidirectional")

    def __init__(
        self,
        cell: cells.Cell | str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        cell = cells.get(cell) if isinstance(cell, str) else cell
        if len(cell.states) != 1:
            raise NotImplementedError(
                f"the stack carries one state per layer; {cell.name!r} has {cell.states}"
            )
        if cell.noise or cell.extra_parameter_shapes(hidden_size):  # masks and γ/β: RNN/GRU draw them
            raise ValueError(f"cell: {cell.name!r} takes per-call masks or extra parameters, which "
                             "Recurrent does not make; expected a cell without options (use "
                             "scratchrnn.RNN / GRU with layer_norm=, recurrent_dropout=, zoneout=)")
        if cells.CELLS.get(cell.name) is not cell:
            cells.register(cell)
        for name, size in (("input_size", input_size), ("hidden_size", hidden_size),
                           ("num_layers", num_layers)):
            if isinstance(size, bool) or not isinstance(size, int):
                raise TypeError(f"{name} should be of type int, got: {type(size).__name__}")
            if size <= 0:
                raise ValueError(f"{name} must be greater than zero")
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
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
        self.cell = cell
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        layout = Layout(num_layers, bidirectional, bias)
        self._flat_weights_names: list[str] = []
        for layer, d, _ in layout.walk():
            D = layout.input_size(layer, input_size, hidden_size)
            for stem, shape in cell.parameter_shapes(D, hidden_size, bias).items():
                name = stem + layout.suffix(layer, d)
                self.register_parameter(name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype)))
                self._flat_weights_names.append(name)
        self.reset_parameters()

    @property
    def cell_name(self) -> str:
        return self.cell.name

    def reset_parameters(self) -> None:
        """The cell's init, over every parameter in registration order."""
        self.cell.reset_parameters_(list(self.parameters()), self.hidden_size)

    def extra_repr(self) -> str:
        s = f"{self.cell.name!r}, {self.input_size}, {self.hidden_size}"
        for name, default in (("num_layers", 1), ("bias", True), ("batch_first", False),
                              ("dropout", 0.0), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        return s


def _swapped(cls: type[nn.Module], module: nn.Module, arguments: tuple[str, ...]) -> nn.Module:
    """A ``cls`` built with ``module``'s constructor arguments, holding a copy of its weights.

    Built on the meta device, then given storage and loaded: no random numbers are drawn, so
    converting a model leaves the global generator where it was."""
    weight = next(module.parameters())
    with warnings.catch_warnings():  # the dropout-with-one-layer warning was given at the original
        warnings.simplefilter("ignore")
        new = cls(**{name: getattr(module, name) for name in arguments}, device="meta", dtype=weight.dtype)
    new = new.to_empty(device=weight.device)
    new.load_state_dict(module.state_dict())
    for p_new, p in zip(new.parameters(), module.parameters(), strict=True):  # same order
        p_new.requires_grad_(p.requires_grad)
    return new.train(module.training)


# Exact types: ours are subclasses of torch's bases (and the cells of torch's cells), so isinstance
# would swap ours again.
_OURS = {nn.RNN: RNN, nn.GRU: GRU, nn.RNNCell: RNNCell, nn.GRUCell: GRUCell}
_THEIRS = {ours: theirs for theirs, ours in _OURS.items()}


def convert(module: nn.Module, to: str = "scratchrnn") -> nn.Module:
    """Swap every :class:`torch.nn.RNN`, ``GRU``, ``RNNCell`` and ``GRUCell`` inside ``module`` for
    ours (``to="scratchrnn"``), or every one of ours for torch's (``to="torch"``), weights kept;
    no random numbers drawn.

    The swap is in place; the module is returned (the replacement, when ``module`` itself is one).

    Example:
        >>> model = convert(nn.Sequential(nn.GRU(10, 20)))  # model[0] is a scratchrnn.GRU
    """
    if to not in ("scratchrnn", "torch"):
        raise ValueError(f"to must be 'scratchrnn' or 'torch', got {to!r}")
    swaps = _OURS if to == "scratchrnn" else _THEIRS
    if type(module) in swaps:
        return _swapped(swaps[type(module)], module, _OURS.get(type(module), type(module))._ARGUMENTS)
    for name, child in module.named_children():
        setattr(module, name, convert(child, to))
    return module
