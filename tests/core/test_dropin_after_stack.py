"""Drop-in checks on the modules (issue 21): our classes are torch's bases (isinstance), repr names
scratchrnn, RNNCell's errors are torch's word for word, RNNCell(n, 0), an empty PackedSequence
raises IndexError, convert() draws no random numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import scratchrnn


@pytest.mark.parametrize(
    ("ours", "bases"),
    [(lambda: scratchrnn.RNN(3, 4), (nn.RNNBase,)),
     (lambda: scratchrnn.GRU(3, 4), (nn.RNNBase,)),
     (lambda: scratchrnn.GRUCell(3, 4), (nn.GRUCell, nn.RNNCellBase)),
     (lambda: scratchrnn.RNNCell(3, 4), (nn.RNNCell, nn.RNNCellBase))],
    ids=["RNN", "GRU", "GRUCell", "RNNCell"],
)
def test_isinstance_of_torch_classes(ours, bases):
    module = ours()
    assert all(isinstance(module, b) for b in bases)
    # not nn.RNN / nn.GRU themselves: torch.compile refuses to trace those (core/modules.py)
    assert not isinstance(module, (nn.RNN, nn.GRU))


def test_rnn_attributes_users_rely_on_after_subclassing():
    theirs = nn.RNN(3, 4, 2, bidirectional=True)
    ours = scratchrnn.RNN.from_torch(theirs)
    ours.flatten_parameters()
    assert [w.shape for w in ours._flat_weights] == [w.shape for w in theirs._flat_weights]
    shapes = lambda m: [[w.shape for w in ws] for ws in m.all_weights]  # noqa: E731
    assert shapes(ours) == shapes(theirs)
    state = ours.__getstate__()
    fresh = scratchrnn.RNN.__new__(scratchrnn.RNN)
    fresh.__setstate__(state)
    x = torch.randn(5, 2, 3)
    assert torch.equal(fresh(x)[0], ours(x)[0])


@pytest.mark.parametrize("make", [lambda: scratchrnn.RNN(200, 200, num_layers=2),
                                  lambda: scratchrnn.RNNCell(3, 4)])
def test_repr_names_scratchrnn(make):
    assert "scratchrnn" in repr(make())
    assert "scratchrnn" in repr(nn.Sequential(make()))


CELL_BAD_CALLS = {
    "input_features": lambda c: c.RNNCell(10, 20)(torch.randn(3, 11), torch.randn(3, 20)),
    "hidden_features": lambda c: c.RNNCell(10, 20)(torch.randn(3, 10), torch.randn(3, 21)),
    "batch_mismatch": lambda c: c.RNNCell(10, 20)(torch.randn(3, 10), torch.randn(5, 20)),
    "hidden_4d": lambda c: c.RNNCell(10, 20)(torch.randn(3, 10), torch.randn(3, 1, 1, 20)),
    "input_3d": lambda c: c.RNNCell(10, 20)(torch.randn(3, 1, 10)),
    "relu_hidden_features":
        lambda c: c.RNNCell(10, 20, nonlinearity="relu")(torch.randn(3, 10), torch.randn(3, 21)),
    "unknown_nonlinearity": lambda c: c.RNNCell(10, 20, nonlinearity="swish")(torch.randn(3, 10)),
}


@pytest.mark.parametrize("case", CELL_BAD_CALLS)
def test_cell_errors_are_torch_word_for_word(case):
    raised = []
    for namespace in (nn, scratchrnn):
        with pytest.raises(Exception) as info:
            CELL_BAD_CALLS[case](namespace)
        raised.append(info.value)
    theirs, ours = raised
    assert type(ours) is type(theirs) and str(ours) == str(theirs)


def test_cell_with_no_hidden_units():
    for batched in (True, False):
        x = torch.randn(*((2, 3) if batched else (3,)), requires_grad=True)
        h = scratchrnn.RNNCell(3, 0)(x)
        assert h.shape == nn.RNNCell(3, 0)(x).shape
        h.sum().backward()


def test_empty_packed_sequence_raises_index_error_like_nn_rnn():
    empty = PackedSequence(torch.empty(0, 3), torch.empty(0, dtype=torch.int64))
    for module in (nn.RNN(3, 4), scratchrnn.RNN(3, 4)):
        with pytest.raises(IndexError):
            module(empty)


def test_convert_draws_no_random_numbers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.RNN(3, 4, 2, dropout=0.5), nn.Linear(4, 2))
    before = torch.get_rng_state()
    scratchrnn.convert(model)
    assert torch.equal(torch.get_rng_state(), before)
