"""The textbook RNN: the tutorial's time-major loop on autograd, corrected. A teaching artifact and
the oracle our hand-written BPTT is tested against (besides torch.nn.RNN itself).

The tutorial (a Chinese blog post, "RNN的理解") loops over time outside and over layers inside.
Its code had four bugs, fixed here:

1. it returned seq-first input's output batch-first (it transposed the input and never transposed
   the output back); here the output has the input's layout;
2. it wrote each layer's new state into the caller's ``hidden`` list, so calling it twice with the
   same list silently continued from the end of the first call; here the caller's state is never
   touched;
3. it printed the input's shape inside ``forward``;
4. it used ``nn`` without importing it.

Use :func:`time_major_rnn` with :func:`tutorial_weights` of a :class:`scratchrnn.RNN` (or of a
``torch.nn.RNN``) to compare with ours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["time_major_rnn", "tutorial_weights"]

Weights = list[tuple[Tensor, Tensor, Tensor | None]]


def tutorial_weights(rnn: nn.Module) -> Weights:
    """Per layer (W_ih, W_hh, b_ih + b_hh), or b = None without biases: :func:`time_major_rnn`'s form.

    Works for a unidirectional :class:`scratchrnn.RNN` and ``torch.nn.RNN``: both list each layer's
    parameters in ``all_weights`` as [W_ih, W_hh] or [W_ih, W_hh, b_ih, b_hh]. The tensors keep
    their autograd history, so gradients flow back into the module's parameters.
    """
    if rnn.bidirectional:
        raise ValueError("Expected a unidirectional RNN, got bidirectional=True")
    return [(w[0], w[1], w[2] + w[3] if len(w) == 4 else None) for w in rnn.all_weights]


def time_major_rnn(
    x: Tensor,
    h0: Tensor,
    weights: Weights,
    nonlinearity: str = "tanh",
) -> tuple[Tensor, Tensor]:
    """The stacked RNN, time loop outside, layer loop inside, on autograd.

    Args:
        x: (T, N, D) input. h0: (L, N, H) initial states.
        weights: per layer (W_ih (H, D_l), W_hh (H, H), b (H,) or None), b = b_ih + b_hh.

    Returns:
        output (T, N, H) of the last layer and h_n (L, N, H).
    """
    act = torch.tanh if nonlinearity == "tanh" else torch.relu
    h = list(h0.unbind(0))  # our own list: the caller's h0 is never written to
    outputs = []
    for x_t in x.unbind(0):  # time outside ...
        inp = x_t
        for layer, (W_ih, W_hh, b) in enumerate(weights):  # ... layers inside
            a_t = inp @ W_ih.t() + h[layer] @ W_hh.t()
            h[layer] = act(a_t if b is None else a_t + b)
            inp = h[layer]
        outputs.append(inp)
    return torch.stack(outputs), torch.stack(h)

