"""Initialisation schemes for an RNN's parameters, applied in place.

Each scheme sets the input weights W_ih, the recurrent weights W_hh and the biases of every layer
and direction of a :class:`scratchrnn.RNN` (or :class:`scratchrnn.RNNCell`, :class:`scratchrnn.GRU`,
:class:`scratchrnn.GRUCell`, or torch's own: the parameter names are the same; a GRU's W_hh is
initialised gate by gate). H is the hidden size, D a layer's input size.

    scheme        W_ih                    W_hh                     biases        ρ(W_hh), H large
    default       U(−1/√H, 1/√H)          U(−1/√H, 1/√H)           U(−1/√H, 1/√H) ≈ 1/√3 ≈ 0.58
    small         N(0, 0.01²)             N(0, 0.01²)              0             ≈ 0.01 √H
    xavier        U(±√(6/(H+D)))          U(±√(3/H))               0             ≈ 1
    orthogonal    U(±√(6/(H+D)))          a random orthogonal Q    0             = 1
    identity      N(0, 0.001²)            I                        0             = 1

``default`` is PyTorch's (and :meth:`scratchrnn.RNN.reset_parameters`'s): same draws, same order,
so the same seed gives the same weights. ``small`` is the tutorial's ``torch.randn(...) * 0.01``
with zero biases; ρ(W_hh) is the spectral radius, the largest |eigenvalue| (for an H × H matrix of
i.i.d. entries with standard deviation σ it tends to σ√H, the circular law), and it sets how fast
∂L/∂h_t shrinks as it travels back through time (see ``scratchrnn lab gradflow``). ``xavier`` is
Glorot & Bengio (2010). ``orthogonal`` is Saxe et al. (2014) for W_hh. ``identity`` is the IRNN of
Le, Jaitly & Hinton (2015), meant for ``nonlinearity='relu'``: with ReLU and W_hh = I, a state
carries over unchanged until an input moves it.

Example:
    >>> rnn = scratchrnn.RNN(2, 100, nonlinearity="relu")
    >>> init_rnn_(rnn, "identity")
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

__all__ = [
    "SCHEMES",
    "default_",
    "identity_",
    "init_rnn_",
    "orthogonal_",
    "small_normal_",
    "xavier_",
]


def _kind(name: str) -> str:
    """'ih', 'hh' or 'bias' for an RNN parameter name (weight_ih_l0, weight_hh, bias_hh_l1_reverse...)."""
    if name.startswith("weight_ih"):
        return "ih"
    if name.startswith("weight_hh"):
        return "hh"
    if name.startswith("bias"):
        return "bias"
    raise ValueError(f"Expected RNN parameters named weight_ih*, weight_hh* or bias*, got {name!r}")


def _hidden_size(rnn: nn.Module) -> int:
    size = getattr(rnn, "hidden_size", None)
    if not isinstance(size, int):
        raise TypeError(f"Expected an RNN module with an int hidden_size, got {type(rnn).__name__}")
    return size


@torch.no_grad()
def default_(rnn: nn.Module) -> nn.Module:
    """PyTorch's default: every parameter U(−1/√H, 1/√H), drawn in registration order."""
    bound = 1.0 / math.sqrt(_hidden_size(rnn))
    for _, p in rnn.named_parameters():
        p.uniform_(-bound, bound)
    return rnn


def _biases_zero_and(rnn: nn.Module, init_ih: Callable[[Tensor], object],
                     init_hh: Callable[[Tensor], object]) -> nn.Module:
    """Every bias to zero, every W_ih through ``init_ih`` and every W_hh through ``init_hh``, in
    registration order (so a seed gives the same draws whatever the scheme does with them). A gated
    cell's W_hh (G·H, H) is G square blocks, one per gate (a GRU's r, z, n): each is initialised
    on its own, so that "orthogonal" and "identity" mean what they say for every gate."""
    for name, p in rnn.named_parameters():
        kind = _kind(name)
        if kind == "bias":
            p.zero_()
        elif kind == "hh":
            for block in p.split(_hidden_size(rnn)):  # (H, H) each
                init_hh(block)
        else:
            init_ih(p)
    return rnn


@torch.no_grad()
def small_normal_(rnn: nn.Module, std: float = 0.01) -> nn.Module:
    """The tutorial's ``torch.randn(shape) * 0.01``: weights N(0, std²), biases zero."""
    normal = partial(Tensor.normal_, mean=0.0, std=std)
    return _biases_zero_and(rnn, normal, normal)


@torch.no_grad()
def xavier_(rnn: nn.Module, gain: float = 1.0) -> nn.Module:
    """Glorot & Bengio (2010): weights U(±gain·√(6 / (fan_in + fan_out))), biases zero."""
    xavier = partial(nn.init.xavier_uniform_, gain=gain)
    return _biases_zero_and(rnn, xavier, xavier)


@torch.no_grad()
def orthogonal_(rnn: nn.Module, gain: float = 1.0) -> nn.Module:
    """W_hh a random orthogonal matrix times gain (Saxe et al. 2014), W_ih Xavier, biases zero."""
    return _biases_zero_and(rnn, nn.init.xavier_uniform_, partial(nn.init.orthogonal_, gain=gain))


@torch.no_grad()
def identity_(rnn: nn.Module, scale: float = 1.0, input_std: float = 0.001) -> nn.Module:
    """IRNN (Le, Jaitly & Hinton 2015): W_hh = scale·I, W_ih N(0, input_std²), biases zero.

    Meant for ``nonlinearity='relu'``; with tanh it still starts every eigenvalue of W_hh at
    ``scale``, but tanh then shrinks the state at every step.
    """
    def eye(p: Tensor) -> Tensor:
        return p.copy_(scale * torch.eye(p.shape[0], dtype=p.dtype, device=p.device))

    return _biases_zero_and(rnn, partial(Tensor.normal_, mean=0.0, std=input_std), eye)


SCHEMES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "default": default_,
    "small": small_normal_,
    "xavier": xavier_,
    "orthogonal": orthogonal_,
    "identity": identity_,
}


def init_rnn_(rnn: nn.Module, scheme: str) -> nn.Module:
    """Initialise ``rnn``'s parameters in place with one of :data:`SCHEMES`; returns ``rnn``.

    Args:
        rnn: a scratchrnn.RNN / RNNCell (or torch.nn.RNN / RNNCell).
        scheme: 'default', 'small', 'xavier', 'orthogonal' or 'identity'.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"Unknown init scheme {scheme!r}. Select from {', '.join(SCHEMES)}.")
    return SCHEMES[scheme](rnn)
