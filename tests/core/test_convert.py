"""RNN.from_torch / to_torch, RNNCell's, and convert(): every nn.RNN / nn.RNNCell of a model swapped
for ours and back, weights, arguments, device, dtype, training mode and frozen weights kept; and
TorchScript through to_torch()."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import max_abs
from torch import nn

from scratchrnn import RNN, RNNCell, convert

F64 = torch.float64
CONFIGS = [
    {},
    {"num_layers": 2, "bidirectional": True, "batch_first": True, "dropout": 0.3},
    {"nonlinearity": "relu", "bias": False},
]


@pytest.mark.parametrize("config", CONFIGS, ids=["L1", "L2-bi-NTD-dropout", "relu-nobias"])
def test_from_torch_and_back_keep_everything(config):
    torch.manual_seed(0)
    theirs = nn.RNN(3, 4, dtype=F64, **config).eval()
    theirs.weight_hh_l0.requires_grad_(False)
    ours = RNN.from_torch(theirs)
    assert type(ours) is RNN and repr(ours) == "scratchrnn." + repr(theirs) and not ours.training
    assert not ours.weight_hh_l0.requires_grad and ours.weight_ih_l0.requires_grad
    x = torch.randn(2, 5, 3, dtype=F64)
    assert max_abs(ours(x)[0], theirs(x)[0]) <= 1e-10
    back = ours.to_torch()
    assert type(back) is nn.RNN and repr(back) == repr(theirs)
    for (name, a), (name_b, b) in zip(theirs.state_dict().items(), back.state_dict().items(), strict=True):
        assert name == name_b and torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # a copy


def test_cell_from_torch_and_back():
    torch.manual_seed(0)
    theirs = nn.RNNCell(3, 4, nonlinearity="relu", dtype=F64)
    ours = RNNCell.from_torch(theirs)
    x = torch.randn(2, 3, dtype=F64)
    assert type(ours) is RNNCell and max_abs(ours(x), theirs(x)) <= 1e-10
    assert type(ours.to_torch()) is nn.RNNCell and max_abs(ours.to_torch()(x), theirs(x)) == 0


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 3), nn.RNN(3, 4, num_layers=2))
        self.cell = nn.RNNCell(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        output, h_n = self.encoder(x)
        return self.head(self.cell(output[-1], h_n[-1]))


def test_convert_swaps_every_rnn_and_back():
    torch.manual_seed(0)
    model = Model().double()
    x = torch.randn(5, 2, 3, dtype=F64)
    want = model(x)
    ours = convert(model)
    assert ours is model and type(model.encoder[1]) is RNN and type(model.cell) is RNNCell
    assert max_abs(model(x), want) <= 1e-10
    model.encoder[1].weight_hh_l1.data.add_(0.5)  # the weights travel back too
    changed = model(x)
    convert(model, to="torch")
    assert type(model.encoder[1]) is nn.RNN and type(model.cell) is nn.RNNCell
    assert max_abs(model(x), changed) <= 1e-10
    assert type(convert(nn.RNN(2, 3))) is RNN  # a bare RNN is replaced, not changed in place
    with pytest.raises(ValueError, match="to must be"):
        convert(model, to="onnx")


def operators(traced) -> set[str]:
    """The kinds of the nodes of a traced module's graph, submodules inlined ("aten::rnn_tanh")."""
    return {node.kind() for node in traced.inlined_graph.nodes()}


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the shape checks, as for nn.RNN
def test_torchscript_trace_records_our_operator_and_to_torch_gives_torchs(tmp_path):
    # torch.jit.trace of ours records torch.ops.scratchrnn.rnn: the saved program loads and runs
    # where scratchrnn is imported (its kernel is Python). For TorchScript without scratchrnn
    # (C++), to_torch() gives the equivalent nn.RNN. torch.jit.script compiles neither ours (a
    # Python module over an autograd.Function) nor, in torch 2.13, nn.RNN itself.
    torch.manual_seed(0)
    ours = RNN(3, 4, num_layers=2, bidirectional=True, dtype=F64)
    x, x_other = torch.randn(5, 2, 3, dtype=F64), torch.randn(7, 3, 3, dtype=F64)
    traced = torch.jit.trace(ours, (x,))
    assert "scratchrnn::rnn" in operators(traced)
    traced.save(str(tmp_path / "ours.pt"))
    assert max_abs(torch.jit.load(str(tmp_path / "ours.pt"))(x_other)[0], ours(x_other)[0]) <= 1e-10
    theirs = torch.jit.trace(ours.to_torch(), (x,))
    # The operators, not the graph's text: that text carries source paths, which contain
    # "scratchrnn" in a clone of that name (tests/test_clone_path.py runs this test from one).
    assert not [op for op in operators(theirs) if op.startswith("scratchrnn::")]
    assert "aten::rnn_tanh" in operators(theirs)
    assert max_abs(theirs(x_other)[0], ours(x_other)[0]) <= 1e-10
    with pytest.raises(RuntimeError), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what the scripting compiler says before it fails
        torch.jit.script(ours)
    with pytest.raises(AttributeError, match="no attribute 'forward'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(ours.to_torch())(x)  # torch 2.13's own nn.RNN does not script either
