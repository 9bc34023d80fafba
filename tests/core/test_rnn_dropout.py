"""Dropout between the layers of scratchrnn.RNN: where it sits, nn.RNN's masks under the same
seed, gradcheck through the masks, its state, pickling and warnings.

Shared cases and helpers: rnn_helpers.py. Tolerances: ≤ 1e-10 max abs in float64, ≤ 1e-5
relative in float32, as the issue asks; never loosened to make a test pass.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from helpers import max_abs
from rnn_helpers import (
    ABS_TOL_F64,
    F64,
    D,
    H,
    compare,
    functional,
    make_pair,
    run_with_grads,
)
from torch import nn
from torch.autograd import gradcheck

from scratchrnn import RNN

pytestmark = pytest.mark.usefixtures("one_thread")


def test_gradcheck_through_dropout(loops):
    # Re-seeding inside f draws the same dropout masks on every call, so f is a fixed
    # differentiable function and gradcheck can check the backward through the masks.
    torch.manual_seed(0)
    model = RNN(3, 4, num_layers=3, dropout=0.5, bidirectional=True, dtype=F64).train()
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    hx = torch.randn(6, 2, 4, dtype=F64, requires_grad=True)
    g = functional(model)

    def f(*args):
        torch.manual_seed(5)
        return g(*args)

    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    with torch.random.fork_rng():
        out_a = f(x, hx, *params)[0]
        model.dropout = 0.0
        out_b = f(x, hx, *params)[0]
        model.dropout = 0.5
        assert not torch.equal(out_a, out_b)  # the masks are really there
        assert gradcheck(f, (x, hx, *params), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("num_layers,bidirectional", [(2, False), (3, True)])
def test_dropout_matches_nn_under_the_same_seed(num_layers, bidirectional, diffs):
    """On CPU our masks draw the same Bernoulli numbers as nn.RNN's: same seed, same training."""
    ours, theirs = make_pair(num_layers=num_layers, bidirectional=bidirectional, dropout=0.4)
    torch.manual_seed(8)
    x = torch.randn(5, 3, D, dtype=F64)
    hx = torch.randn(num_layers * (1 + bidirectional), 3, H, dtype=F64)
    results = []
    for model in (ours, theirs):
        torch.manual_seed(9)
        results.append(run_with_grads(model.train(), x, hx))
    (got, names), (want, _) = results
    compare(got, want, names, max_abs, ABS_TOL_F64, diffs, "float64 max abs vs nn.RNN (dropout)")


@pytest.mark.parametrize("p", [0, 0.276, 0.731, 1])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_dropout_sits_between_layers(p, train):
    # With every weight 1, relu and a 10-ones input, layer 0 gives 10 in each of its 1000 units
    # and layer 1 sums what dropout kept of them: 10 000 with no dropout, 0 with p = 1, and in
    # between 10 × (kept units) / (1 − p), the same in every unit.
    rnn = RNN(10, 1000, 2, bias=False, dropout=p, nonlinearity="relu", dtype=F64)
    rnn.train(train)
    with torch.no_grad():
        for w in rnn.parameters():
            w.fill_(1)
    output, h_n = rnn(torch.ones(1, 1, 10, dtype=F64), torch.zeros(2, 1, 1000, dtype=F64))
    value = output[0, 0, 0].item()
    assert output.min() == output.max()
    if p == 0 or not train:
        assert value == 10000
    elif p == 1:
        assert value == 0
    else:
        assert 8000 < value < 12000
        kept = value * (1 - p) / 10
        assert abs(kept - round(kept)) < 1e-6
    assert h_n[0].min() == h_n[0].max() == 10
    assert h_n[1, 0, 0].item() == value


@pytest.mark.parametrize("p", [0, 0.1234])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_dropout_state_and_pickle(p, train):
    rnn = RNN(100, 100, 2, bias=False, dropout=p, nonlinearity="relu").train(train)
    torch.manual_seed(12)
    x, hx = torch.rand(1, 1, 100), torch.rand(2, 1, 100)
    out1, hy1 = rnn(x, hx)
    out2, hy2 = rnn(x, hx)
    out3, hy3 = pickle.loads(pickle.dumps(rnn))(x, hx)
    deterministic = p == 0 or not train
    for a, b in ((out1, out2), (out1, out3), (hy1, hy2), (hy1, hy3)):
        assert torch.equal(a, b) == deterministic


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_changing_dropout_after_construction_takes_effect(train):
    rnn = RNN(100, 100, 2, dropout=0, nonlinearity="relu").train(train)
    torch.manual_seed(13)
    x = torch.rand(3, 2, 100)
    previous = None
    for p in (0, 0.5, 0, 0.7, 0.2, 1, 0.2, 0):
        rnn.dropout = p
        out1, hy1 = rnn(x)
        out2, hy2 = rnn(x)
        deterministic = p in (0, 1) or not train
        assert torch.equal(out1, out2) == deterministic
        assert torch.equal(hy1, hy2) == deterministic
        if previous is not None:
            # In eval dropout never applies; in training every change (or fresh mask) shows.
            assert torch.equal(out1, previous) == (not train)
        previous = out1


def test_dropout_p1_in_training_matches_nn(diffs):
    # p = 1 is deterministic (every inner output dropped), so nn.RNN is an exact oracle there.
    ours, theirs = make_pair(num_layers=3, bidirectional=True, dropout=1.0)
    torch.manual_seed(14)
    x, hx = torch.randn(4, 2, D, dtype=F64), torch.randn(6, 2, H, dtype=F64)
    got, names = run_with_grads(ours.train(), x, hx)
    want, _ = run_with_grads(theirs.train(), x, hx)
    compare(got, want, names, max_abs, ABS_TOL_F64, diffs, "float64 max abs vs nn.RNN (dropout)")


@pytest.mark.parametrize("dropout", [0.3, 1])
def test_dropout_with_one_layer_warns_like_nn(dropout):
    with pytest.warns(UserWarning, match="num_layers greater than 1") as theirs:
        nn.RNN(3, 5, dropout=dropout)
    with pytest.warns(UserWarning, match="num_layers greater than 1") as ours:
        RNN(3, 5, dropout=dropout)
    assert str(ours[0].message) == str(theirs[0].message)  # torch's __init__ warns for both (the
    # frame it names is inside the library for both too: torch's rnn.py, our options.py)
