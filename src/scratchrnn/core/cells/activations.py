r"""The Elman cell's nonlinearities f and their derivatives f', and :class:`Activation`, a user's pair.

What the backward reads is f'(a_t) for every row. Where f' is a function of the output h = f(a),
it is computed from the layer's output, which the operators save anyway; where it needs the
pre-activation a, a is recomputed in the backward (two GEMMs over all steps at once, no step
waiting for another). Either way the forward saves nothing more than for tanh: the cost of a
pre-activation derivative is that recomputation, and a (rows, H) buffer while the backward runs.

    name         f(a)                               f'(a)                          from
    tanh         tanh a                             1 − h²                         h
    relu         max(a, 0)                          [h > 0]                        h
    sigmoid      σ(a)                               h (1 − h)                      h
    softsign     a / (1 + |a|)                      (1 − |h|)²                     h
    leaky_relu   a if a > 0 else 0.01 a             1 if h > 0 else 0.01           h
    gelu         a Φ(a)                             Φ(a) + a φ(a)                  a
    silu         a σ(a)                             σ(a) (1 + a (1 − σ(a)))        a
    Activation   f(a)                               df(a)                          a
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BUILT_IN", "Activation"]

NEGATIVE_SLOPE = 0.01  # torch's default for leaky_relu


class Activation:
    """A nonlinearity of one's own for the Elman cell: ``f`` and its derivative ``df``, both
    elementwise functions of a tensor; ``df`` is given the pre-activation a (not f(a)).

    Both should be written in differentiable torch operations (then double backward works too).
    The cell is registered as ``rnn_<name>``, ``name`` defaulting to ``f.__name__``.

    Example:
        >>> act = Activation(torch.sin, torch.cos)
        >>> rnn = scratchrnn.RNN(10, 20, nonlinearity=act)
    """

    from_output = False  # df reads a: the backward recomputes the pre-activation

    def __init__(self, f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor],
                 name: str | None = None) -> None:
        if not callable(f) or not callable(df):
            raise TypeError(f"Activation(f, df) takes two functions, got {type(f).__name__} and "
                            f"{type(df).__name__}")
        name = name if name is not None else getattr(f, "__name__", "")
        if not name.isidentifier():
            raise ValueError(f"Activation needs a name that is an identifier (pass name=...), got {name!r}")
        self.f, self.df, self.name = f, df, name

    def apply_(self, a: Tensor) -> None:
        """a ← f(a), in place (from a copy when autograd records it: f's backward reads a)."""
        a.copy_(self.f(a.clone() if a.requires_grad else a))

    def fprime(self, a: Callable[[], Tensor], h: Tensor) -> Tensor:
        """f'(a), from the pre-activation ``a()`` (built on call) or the output h."""
        return self.df(a())

    def __call__(self, a: Tensor) -> Tensor:
        return self.f(a)

    def __repr__(self) -> str:
        return f"Activation({self.name})"

    def __reduce__(self):  # pickled by its functions (a module holding one pickles with it)
        return (Activation, (self.f, self.df, self.name))


class _FromOutput(Activation):
    """A built-in whose derivative is a function of its output."""

    from_output = True

    def __init__(self, name: str, f, apply_, fprime_of_h) -> None:
        self.f, self.name, self._apply_, self._fprime = f, name, apply_, fprime_of_h

    def apply_(self, a):
        self._apply_(a)

    def fprime(self, a, h):
        return self._fprime(h)

    def __reduce__(self):
        return (_built_in, (self.name,))


class _FromInput(Activation):
    """A built-in whose derivative needs the pre-activation."""

    def __init__(self, name: str, f, df) -> None:
        self.f, self.df, self.name = f, df, name

    def __reduce__(self):
        return (_built_in, (self.name,))


def _built_in(name: str) -> Activation:
    return BUILT_IN[name]


def _gelu_prime(a: Tensor) -> Tensor:
    cdf = 0.5 * (1 + torch.erf(a / math.sqrt(2)))  # Φ(a)
    pdf = torch.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)  # φ(a)
    return cdf + a * pdf


def _silu_prime(a: Tensor) -> Tensor:
    s = torch.sigmoid(a)
    return s * (1 + a * (1 - s))


BUILT_IN: dict[str, Activation] = {
    "tanh": _FromOutput("tanh", torch.tanh, Tensor.tanh_, lambda h: torch.mul(h, h).neg_().add_(1)),
    # relu's f' is a bool mask (a selection, not a product: see elman.times_fprime)
    "relu": _FromOutput("relu", torch.relu, Tensor.relu_, lambda h: h.le(0).logical_not_()),
    "sigmoid": _FromOutput("sigmoid", torch.sigmoid, Tensor.sigmoid_, lambda h: h * (1 - h)),
    "softsign": _FromOutput("softsign", F.softsign, lambda a: Activation.apply_(BUILT_IN["softsign"], a),
                            lambda h: (1 - h.abs()).square()),
    "leaky_relu": _FromOutput("leaky_relu", F.leaky_relu, lambda a: F.leaky_relu_(a, NEGATIVE_SLOPE),
                              lambda h: (h > 0).to(h.dtype).mul_(1 - NEGATIVE_SLOPE).add_(NEGATIVE_SLOPE)),
    "gelu": _FromInput("gelu", F.gelu, _gelu_prime),
    "silu": _FromInput("silu", F.silu, _silu_prime),
}
