"""torch.onnx.export of models using scratchrnn.RNN or GRU, and of CharRNN, run by onnxruntime:
outputs equal PyTorch's (float32, ≤ 1e-5 relative), with dynamic sequence length and batch size.
Our operator becomes ONNX's RNN or GRU operator (scratchrnn.core.onnx). Needs the ``onnx`` extra."""

from __future__ import annotations

import pytest
import torch
from helpers import rel_err
from torch import nn

from scratchrnn import GRU, RNN, CharRNN
from scratchrnn.core.onnx import onnx_translation_table

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # inside torch.onnx and onnxscript
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:# The axis name:UserWarning"),  # torch.export's note on N
]
REL_TOL_F32 = 1e-5


class Tagger(nn.Module):
    def __init__(self, cell: str = "rnn", **kwargs) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = (GRU if cell == "gru" else RNN)(3, 4, **kwargs)
        self.out = nn.Linear(4 * (1 + self.rnn.bidirectional), 2)

    def forward(self, x, hx):
        output, h_n = self.rnn(x, hx)
        return self.out(output), h_n


def run_onnx(path, *args):
    session = ort.InferenceSession(str(path))
    return session.run(None, {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)})


def export(model, args, dynamic_shapes, path):
    torch.onnx.export(model, args, str(path), dynamo=True, dynamic_shapes=dynamic_shapes,
                      custom_translation_table=onnx_translation_table(), verbose=False)


@pytest.mark.parametrize(
    "config",
    [{}, {"num_layers": 2, "bidirectional": True}, {"num_layers": 3, "nonlinearity": "relu"},
     {"num_layers": 2, "bias": False, "batch_first": True}, {"cell": "gru"},
     {"cell": "gru", "num_layers": 2, "bidirectional": True},
     {"cell": "gru", "num_layers": 2, "bias": False, "batch_first": True},
     {"num_layers": 2, "bidirectional": True, "nonlinearity": "sigmoid"}, {"nonlinearity": "softsign"},
     {"nonlinearity": "leaky_relu", "bidirectional": True},
     {"num_layers": 2, "recurrent_dropout": 0.3, "weight_drop": 0.5},
     {"cell": "gru", "weight_drop": 0.5}],
    ids=["L1", "L2-bi", "L3-relu", "L2-nobias-NTD", "gru", "gru-L2-bi", "gru-L2-nobias-NTD",
         "L2-bi-sigmoid", "softsign", "bi-leaky_relu", "L2-dropouts-in-eval", "gru-weight_drop-in-eval"],
)
def test_rnn_model_runs_in_onnxruntime_like_pytorch(config, tmp_path, diffs):
    model = Tagger(**config).eval()
    L = model.rnn.num_layers * (1 + model.rnn.bidirectional)
    T, N = torch.export.Dim("T", min=1), torch.export.Dim("N", min=1)
    x_dims = {0: N, 1: T} if model.rnn.batch_first else {0: T, 1: N}
    shape = lambda T_, N_: (N_, T_, 3) if model.rnn.batch_first else (T_, N_, 3)  # noqa: E731
    export(model, (torch.randn(shape(5, 2)), torch.randn(L, 2, 4)), (x_dims, {1: N}), tmp_path / "m.onnx")
    for T_, N_ in ((5, 2), (1, 1), (9, 3)):
        x, hx = torch.randn(shape(T_, N_)), torch.randn(L, N_, 4)
        want = model(x, hx)
        for got, w in zip(run_onnx(tmp_path / "m.onnx", x, hx), want, strict=True):
            diffs("float32 relative, onnxruntime vs PyTorch", rel_err(torch.from_numpy(got), w))
            assert rel_err(torch.from_numpy(got), w) <= REL_TOL_F32


@pytest.mark.parametrize("embedding_dim", [5, 0], ids=["embedding", "one-hot"])
def test_char_rnn_runs_in_onnxruntime_like_pytorch(embedding_dim, tmp_path, diffs):
    torch.manual_seed(0)
    model = CharRNN(11, embedding_dim, 8, num_layers=2).eval()
    T, N = torch.export.Dim("T", min=1), torch.export.Dim("N", min=1)
    ids, h0 = torch.randint(11, (6, 3)), torch.randn(2, 3, 8)
    export(model, (ids, h0), ({0: T, 1: N}, {1: N}), tmp_path / "charrnn.onnx")
    for T_, N_ in ((6, 3), (1, 1), (8, 2)):
        ids, h0 = torch.randint(11, (T_, N_)), torch.randn(2, N_, 8)
        for got, w in zip(run_onnx(tmp_path / "charrnn.onnx", ids, h0), model(ids, h0), strict=True):
            diffs("float32 relative, onnxruntime vs PyTorch", rel_err(torch.from_numpy(got), w))
            assert rel_err(torch.from_numpy(got), w) <= REL_TOL_F32


@pytest.mark.parametrize("config", [{"nonlinearity": "gelu"}, {"layer_norm": True}, {"zoneout": 0.1}],
                         ids=["gelu", "layer_norm", "zoneout"])
def test_a_cell_onnx_has_no_operator_for_is_refused_naming_it(config, tmp_path):
    model = Tagger(**config).eval()
    with pytest.raises(Exception, match="ONNX export of the cell") as info:
        export(model, (torch.randn(5, 2, 3), torch.randn(1, 2, 4)), None, tmp_path / "m.onnx")
    assert model.rnn.cell_name in str(info.value)
