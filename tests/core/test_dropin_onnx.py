"""``torch.onnx.export(model, args, f)`` with no extra argument, as with nn.RNN (issue 21): our
operator's translation reaches the exporter by itself (scratchrnn.core.onnx). onnxruntime equals
PyTorch (float32, ≤ 1e-5 relative); ``custom_translation_table`` is still accepted. Needs the
``onnx`` extra."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import rel_err
from torch import nn

import scratchrnn
from scratchrnn.core.onnx import onnx_translation_table

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # inside torch.onnx and onnxscript
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]
REL_TOL_F32 = 1e-5


class Tagger(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn, self.out = rnn, nn.Linear(rnn.hidden_size * (1 + rnn.bidirectional), 2)

    def forward(self, x, hx):
        output, h_n = self.rnn(x, hx)
        return self.out(output), h_n


def _onnxruntime(path, *args):
    session = ort.InferenceSession(str(path))
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: a.numpy() for n, a in zip(names, args, strict=True)})


@pytest.mark.parametrize("table", [False, True], ids=["no_argument", "custom_translation_table"])
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}], ids=["L1", "L2-bi"])
def test_export_needs_no_argument(kwargs, table, tmp_path, diffs):
    torch.manual_seed(0)
    model = Tagger(scratchrnn.RNN(3, 4, **kwargs)).eval()
    L = model.rnn.num_layers * (1 + model.rnn.bidirectional)
    x, hx = torch.randn(5, 2, 3), torch.randn(L, 2, 4)
    extra = {"custom_translation_table": onnx_translation_table()} if table else {}
    torch.onnx.export(model, (x, hx), tmp_path / "m.onnx", **extra)
    for got, want in zip(_onnxruntime(tmp_path / "m.onnx", x, hx), model(x, hx), strict=True):
        diffs("float32 relative, onnxruntime vs PyTorch", rel_err(torch.from_numpy(got), want))
        assert rel_err(torch.from_numpy(got), want) <= REL_TOL_F32


@pytest.mark.parametrize("exporter_first", [False, True], ids=["scratchrnn_first", "exporter_first"])
def test_first_export_in_a_fresh_process_needs_no_argument(exporter_first, tmp_path):
    # Importing scratchrnn does not import onnxscript: the translation reaches the exporter when
    # torch.onnx.export first loads its table, or at once if the program loaded it before.
    first = "import torch.onnx._internal.exporter._registration" if exporter_first else ""
    program = f"""
import sys, torch
{first}
import scratchrnn
assert ("onnxscript" in sys.modules) == {exporter_first}
torch.onnx.export(scratchrnn.RNN(3, 4).eval(), (torch.randn(5, 2, 3),), {str(tmp_path / 'm.onnx')!r})
"""
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", program], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _onnxruntime(tmp_path / "m.onnx", torch.randn(5, 2, 3))[0].shape == (5, 2, 4)
