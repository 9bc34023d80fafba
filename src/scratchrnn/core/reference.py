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

Its init (weights N(0, 0.01²), zero biases) and single bias are kept as the textbook's; use
:func:`time_major_rnn` with the weights of a :class:`scratchrnn.RNN` to compare with ours.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def time_major_rnn(
    x: Tensor,
    h0: Tensor,
    weights: list[tuple[Tensor, Tensor, Tensor | None]],
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


class TutorialRNN(nn.Module):
    """The tutorial's ``MyRNN`` with its bugs fixed and nn.RNN's argument names.

    Args:
        input_size, hidden_size, num_layers: as nn.RNN. batch_first: (N, T, D) in and out.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, batch_first=False):
        super().__init__()
        self.hidden_size, self.num_layers, self.batch_first = hidden_size, num_layers, batch_first
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        # The tutorial's init: small Gaussian weights (×0.01) and zero biases.
        self.w_ih = nn.ParameterList(nn.Parameter(0.01 * torch.randn(hidden_size, d)) for d in sizes)
        H = hidden_size
        self.w_hh = nn.ParameterList(nn.Parameter(0.01 * torch.randn(H, H)) for _ in sizes)
        self.b_h = nn.ParameterList(nn.Parameter(torch.zeros(hidden_size)) for _ in sizes)

    def forward(self, inputs: Tensor, hidden: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = inputs.transpose(0, 1) if self.batch_first else inputs  # (T, N, D)
        if hidden is None:
            hidden = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)
        weights = list(zip(self.w_ih, self.w_hh, self.b_h, strict=True))
        output, h_n = time_major_rnn(x, hidden, weights)
        return (output.transpose(0, 1) if self.batch_first else output), h_n
