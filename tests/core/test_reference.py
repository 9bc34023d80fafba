"""The tutorial's time-major loop (scratchrnn.core.reference), corrected, against ours.

The tutorial claims the time loop must be outside the layer loop. It need not be: each layer keeps
its own state, so running a layer over all T steps before the next (ours, layer-major) computes the
same numbers as stepping every layer at each t (the tutorial's, time-major). These tests prove it
in float64, outputs and every gradient, to ≤ 1e-12, and check the four fixes the reference makes.
"""

from __future__ import annotations

import pytest
import torch
from helpers import max_abs
from torch import Tensor, nn

from scratchrnn import RNN
from scratchrnn.core.reference import time_major_rnn, tutorial_weights

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
TOL = 1e-12


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


def outputs_and_grads(run, model: RNN, x: Tensor, h0: Tensor) -> list[Tensor]:
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    output, h_n = run(x, h0)
    g = torch.Generator().manual_seed(99)
    loss = (output * torch.randn(output.shape, generator=g, dtype=F64)).sum()
    loss = loss + (h_n * torch.randn(h_n.shape, generator=g, dtype=F64)).sum()
    return [output.detach(), h_n.detach(), *torch.autograd.grad(loss, [x, h0, *model.parameters()])]


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("T", [1, 6])
def test_layer_major_equals_time_major(num_layers, nonlinearity, bias, T, diffs):
    torch.manual_seed(0)
    model = RNN(3, 5, num_layers, nonlinearity=nonlinearity, bias=bias, dtype=F64)
    x = torch.randn(T, 4, 3, dtype=F64)
    h0 = torch.randn(num_layers, 4, 5, dtype=F64)
    ours = outputs_and_grads(model, model, x, h0)
    theirs = outputs_and_grads(
        lambda x, h0: time_major_rnn(x, h0, tutorial_weights(model), nonlinearity), model, x, h0
    )
    for name, a, b in zip(["output", "h_n", "dx", "dh0"] + [n for n, _ in model.named_parameters()],
                          ours, theirs, strict=True):
        diffs("float64 max abs layer-major vs time-major", max_abs(a, b))
        assert max_abs(a, b) <= TOL, name


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_tutorial_weights_of_torch_nn_rnn_give_its_output(bias):
    torch.manual_seed(5)
    ref = nn.RNN(3, 5, num_layers=2, bias=bias, dtype=F64)
    x, h0 = torch.randn(4, 2, 3, dtype=F64), torch.randn(2, 2, 5, dtype=F64)
    weights = tutorial_weights(ref)
    assert [b is None for _, _, b in weights] == [not bias, not bias]
    with torch.no_grad():
        got, want = time_major_rnn(x, h0, weights), ref(x, h0)
    assert max_abs(got[0], want[0]) <= TOL and max_abs(got[1], want[1]) <= TOL


def test_tutorial_weights_refuses_a_bidirectional_rnn():
    with pytest.raises(ValueError, match="unidirectional"):
        tutorial_weights(RNN(3, 5, bidirectional=True))


def test_time_major_rnn_does_not_touch_h0():
    torch.manual_seed(1)
    model = RNN(3, 5, 2, dtype=F64)
    h0 = torch.randn(2, 4, 5, dtype=F64)
    copy, version = h0.clone(), h0._version
    time_major_rnn(torch.randn(3, 4, 3, dtype=F64), h0, tutorial_weights(model))
    assert torch.equal(h0, copy) and h0._version == version


def tutorial_as_ours(tutorial: TutorialRNN, batch_first: bool) -> RNN:
    """Our RNN with the tutorial model's weights (its one bias as b_ih, b_hh = 0)."""
    model = RNN(3, tutorial.hidden_size, tutorial.num_layers, batch_first=batch_first, dtype=F64)
    with torch.no_grad():
        for k in range(tutorial.num_layers):
            getattr(model, f"weight_ih_l{k}").copy_(tutorial.w_ih[k])
            getattr(model, f"weight_hh_l{k}").copy_(tutorial.w_hh[k])
            getattr(model, f"bias_ih_l{k}").copy_(tutorial.b_h[k])
            getattr(model, f"bias_hh_l{k}").zero_()
    return model


@pytest.mark.parametrize("batch_first", [False, True], ids=["TND", "NTD"])
def test_tutorial_rnn_returns_the_inputs_layout(batch_first, capsys, diffs):
    torch.manual_seed(2)
    tutorial = TutorialRNN(3, 8, num_layers=2, batch_first=batch_first).double()
    with torch.no_grad():  # the tutorial's 0.01-scale init makes every output ~0: widen it
        for p in tutorial.parameters():
            p.uniform_(-0.5, 0.5)
    T, N = 4, 5
    x = torch.randn((N, T, 3) if batch_first else (T, N, 3), dtype=F64)
    output, h_n = tutorial(x)
    assert output.shape == ((N, T, 8) if batch_first else (T, N, 8))
    assert h_n.shape == (2, N, 8)
    want, want_h_n = tutorial_as_ours(tutorial, batch_first)(x)
    diffs("float64 max abs layer-major vs time-major", max_abs(output, want))
    assert max_abs(output, want) <= TOL and max_abs(h_n, want_h_n) <= TOL
    assert capsys.readouterr().out == ""  # the tutorial printed the input's shape here


def test_tutorial_rnn_leaves_the_callers_hidden_alone():
    torch.manual_seed(3)
    tutorial = TutorialRNN(3, 6, num_layers=3)
    x = torch.randn(4, 2, 3)
    hidden = torch.randn(3, 2, 6)
    copy, version = hidden.clone(), hidden._version
    first = tutorial(x, hidden)
    second = tutorial(x, hidden)  # the tutorial's version continued from the first call's end
    assert torch.equal(hidden, copy) and hidden._version == version
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_tutorial_rnn_keeps_the_textbook_init():
    torch.manual_seed(4)
    tutorial = TutorialRNN(30, 40, num_layers=2)
    assert all(torch.equal(b, torch.zeros_like(b)) for b in tutorial.b_h)
    weights = torch.cat([w.flatten() for w in [*tutorial.w_ih, *tutorial.w_hh]])
    assert 0.008 < weights.std().item() < 0.012  # N(0, 0.01²)
    assert len(list(tutorial.parameters())) == 6  # registered: they train and move with .to()
