"""Whole-model ``torch.save(model)`` then ``torch.load`` with torch's default ``weights_only=True``
(issue 21): a program that allow-lists nn.RNN with ``torch.serialization.safe_globals`` loads the
same program written with scratchrnn.RNN with no second edit (scratchrnn.core.serialization)."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from torch import nn

import scratchrnn
from scratchrnn.core.serialization import SAFE_GLOBALS


class Model(nn.Module):
    """A client's model: embedding, RNN, linear; the RNN's class chosen by the caller."""

    def __init__(self, rnn_class) -> None:
        super().__init__()
        self.encoder = nn.Embedding(7, 4)
        self.rnn = rnn_class(4, 5, 2, dropout=0.3)
        self.decoder = nn.Linear(5, 7)

    def forward(self, ids):
        return self.decoder(self.rnn(self.encoder(ids))[0])


ALLOWED = [Model, nn.Embedding, nn.Linear, nn.RNN, nn.RNNCell]  # what the client lists: torch's classes


def _round_trip(model) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(ALLOWED):
        return torch.load(buffer)  # weights_only=True, torch's default


@pytest.mark.parametrize("rnn_class", [nn.RNN, scratchrnn.RNN], ids=["nn.RNN", "scratchrnn.RNN"])
def test_whole_model_loads_with_weights_only(rnn_class):
    torch.manual_seed(0)
    model = Model(rnn_class).eval()
    loaded = _round_trip(model)
    assert type(loaded.rnn) is rnn_class and loaded.rnn.dropout == 0.3 and not loaded.training
    ids = torch.randint(7, (6, 2))
    assert torch.equal(loaded(ids), model(ids))
    for (name, p), (name_loaded, p_loaded) in zip(model.named_parameters(), loaded.named_parameters(),
                                                  strict=True):
        assert name == name_loaded and torch.equal(p, p_loaded)


def test_cell_loads_with_weights_only():
    cell = scratchrnn.RNNCell(3, 4, nonlinearity="relu")
    loaded = _round_trip(cell)
    x = torch.randn(2, 3)
    assert loaded.nonlinearity == "relu" and torch.equal(loaded(x), cell(x))


def test_allow_list_holds_our_modules_only():
    # What the safety argument covers (docs/dropin.md): our nn.Module classes, nothing else.
    assert scratchrnn.RNN in SAFE_GLOBALS and scratchrnn.RNNCell in SAFE_GLOBALS
    assert all(issubclass(c, nn.Module) and c.__module__.startswith("scratchrnn.") for c in SAFE_GLOBALS)
    assert all(c in torch.serialization.get_safe_globals() for c in SAFE_GLOBALS)


def test_a_file_naming_another_global_is_still_refused():
    # Allowing our classes lets nothing else through: a pickle reaching an arbitrary callable fails.
    class Evil:
        def __reduce__(self):
            return (print, ("called",))

    buffer = io.BytesIO()
    torch.save({"rnn": scratchrnn.RNN(2, 3), "evil": Evil()}, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL print was not an allowed global"):
        torch.load(buffer)
