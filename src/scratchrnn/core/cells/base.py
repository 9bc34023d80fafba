r"""The cell as a plug-in: what a recurrent cell tells the stack, and the registry of cells by name.

A cell is one layer and one direction's step, for a batch of rows; the stack
(:mod:`scratchrnn.core.functional` over the plan and layout of :mod:`scratchrnn.core.stack`) runs
it over every step, layer and direction, packed or padded. A cell with G gates has, per layer and
direction, nn's four parameters

    W_ih (G·H, D)    W_hh (G·H, H)    b_ih (G·H,)    b_hh (G·H,)     (the biases optional)

registered in that order as ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
``bias_hh_l{k}`` (``_reverse`` for the second direction) and initialised U(−1/√H, 1/√H), as torch.nn
does. What a cell writes, one line of code per equation, with rows as batch elements:

- :meth:`Cell.project`: xp = x W_ihᵀ (+ b_ih), (rows, G·H), for all steps at once, before the loop
  (one GEMM instead of one per step: only the recurrent product has to wait for h_{t−1}).
- :meth:`Cell.step`: h_t from xp_t and h_{t−1}; the recurrent product h_{t−1} W_hhᵀ is inside it.
- :meth:`Cell.residuals`: what the step backward reads, per row, recomputed after the forward from
  x, h_{t−1} and h_t (the forward saves no per-step tensor: the operators save the layer outputs).
- :meth:`Cell.step_backward`: given dh_t (the total ∂L/∂h_t), dxp_t = ∂L/∂xp_t, dhp_t = ∂L/∂hp_t
  (hp_t = h_{t−1} W_hhᵀ + b_hh) and the part of dh_{t−1} that does not go through W_hh; the stack
  adds dhp_t W_hh and makes every weight gradient one GEMM after the loop:
  dW_ih = Σ dxpᵀ x, db_ih = Σ dxp, dW_hh = Σ dhpᵀ h_{t−1}, db_hh = Σ dhp, dx = dxp W_ih.
  A cell whose recurrent weight is not a G·H × H matrix (IndRNN's vector u: hp = u ⊙ h) overrides
  :meth:`Cell.recurrent`, :meth:`Cell.recurrent_backward` and :meth:`Cell.recurrent_weight_grad`.
- :meth:`Cell.step_tangent`: forward mode, ḣ_t from ẋp_t, ḣp_t (= h_{t−1} Ẇ_hhᵀ + ḃ_hh +
  ḣ_{t−1} W_hhᵀ, made by the stack) and ḣ_{t−1} (and the tangents of its extra parameters).

The step backward must be written in differentiable torch operations, out of place: that is how
double backward works (autograd differentiating our hand-written backward); the first-order
backward never uses autograd. A cell may also bring its loop in C (:meth:`Cell.accel_ready`,
:meth:`Cell.forward_accel`, :meth:`Cell.backward_accel`); without it the PyTorch loop runs.

Options (issue 19, :mod:`scratchrnn.core.cells.options`): a cell may have extra parameters per
layer and direction (:meth:`Cell.extra_parameter_shapes`, vectors whose gradient is a sum over
rows: the step backward returns its rows' share as a fourth element) and per-call masks
(``noise``: one per layer and direction of each kind, "sequence" (N, H) or "row" (rows, H)); the
stack then passes them, the masks row by row, as ``*aux`` to :meth:`Cell.project`,
:meth:`Cell.step_constants` and :meth:`Cell.residuals`. A cell that masks h_{t−1} where it
enters W_hh says so by :meth:`Cell.recurrent_mask`, and the stack masks dh_{t−1}'s W_hh term and
dW_hh's h_{t−1} with it.

The state is one tensor h per layer and direction (N, H) today. ``states`` names them so that a
cell with more (an LSTM's (h, c)) can declare them; the stack supports one.

The operators take a cell by its registered name (a static string: torch.compile and torch.export
specialise on it), so every cell is registered: ``register(MyCell())``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["CELLS", "Cell", "get", "register"]


class Cell:
    """One recurrent step, its hand-written backward and its tangent (see the module docstring).

    Class attributes: ``name`` (the registry's key, the operators' argument), ``gates`` (G: the
    weights have G·H rows), ``states`` (the names of the state tensors; ("h",) for every cell here).
    """

    name: str = ""
    gates: int = 1
    states: tuple[str, ...] = ("h",)
    noise: tuple[str, ...] = ()  # per-call masks per layer and direction: "sequence" or "row"

    # ----- parameters ------------------------------------------------------------------------

    def parameter_shapes(self, input_size: int, hidden_size: int, bias: bool) -> dict[str, tuple[int, ...]]:
        """{name stem: shape} for one layer and direction, in torch.nn's registration order."""
        G, H, D = self.gates, hidden_size, input_size
        shapes = {"weight_ih": (G * H, D), "weight_hh": (G * H, H)}
        if bias:
            shapes |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
        return shapes

    def reset_parameters_(self, weights: list[Tensor], hidden_size: int) -> None:
        """U(−1/√H, 1/√H) for each weight, in order (torch.nn's init: the same draws)."""
        stdv = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0
        for weight in weights:
            torch.nn.init.uniform_(weight, -stdv, stdv)

    def extra_parameter_shapes(self, hidden_size: int) -> dict[str, tuple[int, ...]]:
        """{name stem: shape} of the parameters beyond nn's four, per layer and direction."""
        return {}

    def reset_extra_(self, weights: list[Tensor]) -> None:
        """Initialises the extra parameters of one layer and direction, in order."""

    # ----- forward ---------------------------------------------------------------------------

    def project(self, x: Tensor, W_ih: Tensor, b_ih: Tensor | None, out: Tensor) -> Tensor:
        """xp = x W_ihᵀ + b_ih for all rows: (rows, G·H). ``out`` (rows, H) is the layer's output
        buffer, which a cell with G = 1 may use as xp's storage."""
        return x @ W_ih.t() if b_ih is None else torch.addmm(b_ih, x, W_ih.t())

    def step_constants(self, W_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> tuple:
        """What :meth:`step` reads besides xp_t and h_{t−1}, made once per layer and direction."""
        return W_hh.t(), b_hh

    def step(self, xp_t: Tensor, h_prev: Tensor, constants: tuple, h_t: Tensor) -> None:
        """Writes h_t (b, H) from xp_t (b, G·H) and h_prev (b, H)."""
        raise NotImplementedError

    # ----- the recurrent product hp = h W_hhᵀ (+ b_hh): a GEMM, unless the cell says otherwise --

    def recurrent(self, h: Tensor, W_hh: Tensor) -> Tensor:
        """h W_hhᵀ (b, G·H): the stack's forward mode uses it (for ḣ_{t−1} W_hhᵀ and h_{t−1} Ẇ_hhᵀ)."""
        return h @ W_hh.t()

    def recurrent_backward(self, dhp: Tensor, W_hh: Tensor) -> Tensor:
        """dhp W_hh (b, H): the part of ∂L/∂h_{t−1} that flows through hp."""
        return dhp @ W_hh

    def recurrent_weight_grad(self, dhp: Tensor, h_prev: Tensor, matmul=torch.mm) -> Tensor:
        """dW_hh = Σ_t dhp_tᵀ h_{t−1} over the rows given (``matmul``: the stack's GEMM)."""
        return matmul(dhp.t(), h_prev)

    # ----- backward --------------------------------------------------------------------------

    def residuals(self, x: Tensor, h_prev: Callable[[], Tensor], out: Tensor, W_ih: Tensor,
                  W_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
        """(rows, ·): what :meth:`step_backward` and :meth:`step_tangent` read for each row, from
        the layer's input x (rows, D), h_t = ``out`` (rows, H) and h_{t−1}: ``h_prev()`` (rows, H),
        built on the first call (a copy for packed input: a cell that needs no h_{t−1} skips it)."""
        raise NotImplementedError

    def step_backward(self, dh_t: Tensor, residuals_t: Tensor, h_prev: Tensor
                      ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(dxp_t, dhp_t, dh_direct) from dh_t (b, H): the total ∂L/∂h_t. dh_direct is the part of
        ∂L/∂h_{t−1} besides dhp_t W_hh (None when there is none). Return the same tensor for dxp_t
        and dhp_t where they are equal (xp and hp enter as a sum): the stack then does not copy it."""
        raise NotImplementedError

    def step_tangent(self, xp_dot_t: Tensor, hp_dot_t: Tensor, h_dot_prev: Tensor,
                     residuals_t: Tensor, h_prev: Tensor, *aux_dot: Tensor | None) -> Tensor:
        """ḣ_t (b, H) from the tangents ẋp_t (b, G·H), ḣp_t (b, G·H) and ḣ_{t−1} (b, H); a cell
        with extra parameters gets their tangents after (``aux_dot``, None where zero)."""
        raise NotImplementedError

    def recurrent_mask(self, residuals: Tensor) -> Tensor | None:
        """The mask (rows, H) on h_{t−1} where it enters W_hh, read from the residuals; None."""
        return None

    # ----- an optional loop in C -------------------------------------------------------------

    def accel_ready(self, *tensors: Tensor) -> bool:
        """Whether :meth:`forward_accel` and :meth:`backward_accel` can run on these tensors (the
        stack passes the call's tensors, then the cell's ``aux``)."""
        return False

    def forward_accel(self, xp: Tensor, h0: Tensor, W_hh: Tensor, b_ih: Tensor | None,
                      b_hh: Tensor | None, batch_sizes: list[int], out: Tensor, h_n: Tensor,
                      reverse: bool, *aux: Tensor) -> None:
        """The step loop in C: fills ``out`` and ``h_n`` as the PyTorch loop does. ``aux``: the cell's
        extra parameters and masks, as :meth:`project` gets them."""
        raise NotImplementedError

    def backward_accel(self, dh: Tensor, x: Tensor, h0: Tensor, h_prev: Callable[[], Tensor],
                       out: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor | None,
                       b_hh: Tensor | None, batch_sizes: list[int], dh0: Tensor, reverse: bool,
                       *aux: Tensor) -> tuple[Tensor, ...]:
        """The BPTT loop in C: (dxp, dhp) from ``dh`` (rows, H), the gradient from the output with
        ∂L/∂h_n added at each sequence's last step; fills ``dh0``. ``h_prev``: as in
        :meth:`residuals`. A cell with extra parameters returns a third element, their gradient
        rows (summed over rows by the stack, as the step backward's fourth element)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


CELLS: dict[str, Cell] = {}


def register(cell: Cell) -> Cell:
    """Adds ``cell`` to the registry under ``cell.name`` (the name must be new)."""
    if not cell.name:
        raise ValueError(f"{cell!r} has no name: set the class attribute `name`")
    if CELLS.get(cell.name, cell) is not cell:
        raise ValueError(f"a cell named {cell.name!r} is registered already: {CELLS[cell.name]!r}")
    CELLS[cell.name] = cell
    return cell


def get(name: str) -> Cell:
    """The registered cell called ``name``."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"Unknown cell {name!r}; registered: {sorted(CELLS)}") from None
