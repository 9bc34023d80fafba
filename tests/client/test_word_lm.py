"""A client's whole life in CI (issue 21): the word-level language model in ``word_lm/`` (written
the way pytorch/examples' word_language_model is) run as is, with nn.RNN, and again with
scratchrnn.RNN swapped in by its one edit, the import in ``word_lm/model.py``. Every step works
with ours as with torch's: training, ``torch.save(model)`` of the whole module, ``torch.load`` with
its defaults and an allow-list that names torch's classes only, evaluation, ``torch.onnx.export``
with no extra argument (and onnxruntime agrees with PyTorch). The perplexities are the same:
same seed, same initialisation, same dropout masks; float32, so equal to a relative 1e-6 (the
sums of float32 GEMMs in a different order, over a few hundred SGD steps)."""

from __future__ import annotations

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import torch

CLIENT = Path(__file__).parent / "word_lm"
ONE_EDIT = ("from torch.nn import RNN\n", "from scratchrnn import RNN\n")
PPL_REL_TOL = 1e-6

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # inside torch.onnx and onnxscript
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore:The tensor attributes self.rnn._flat_weights:UserWarning"),  # nn.RNN's
]


def _run_client(folder: Path, out: Path) -> dict:
    """main.py run as a program would be (its folder first on sys.path, its own ``model``)."""
    out.mkdir()
    sys.modules.pop("model", None)
    sys.path.insert(0, str(folder))
    argv, sys.argv = sys.argv, [str(folder / "main.py"), str(out)]
    try:
        runpy.run_path(str(folder / "main.py"), run_name="__main__")
    finally:
        sys.argv = argv
        sys.path.remove(str(folder))
        sys.modules.pop("model", None)
    return json.loads((out / "results.json").read_text())


def _check_onnx(out: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    io = torch.load(out / "onnx_io.pt")
    session = ort.InferenceSession(str(out / "model.onnx"))
    feeds = dict(zip((i.name for i in session.get_inputs()), (io["input"].numpy(), io["hidden"].numpy()),
                     strict=True))
    for got, want in zip(session.run(None, feeds), (io["log_probs"], io["h_n"]), strict=True):
        assert torch.allclose(torch.from_numpy(got), want, rtol=1e-5, atol=1e-5)


def test_word_lm_swapped_by_one_edit(tmp_path):
    pytest.importorskip("onnxscript")
    swapped = tmp_path / "word_lm_scratchrnn"
    shutil.copytree(CLIENT, swapped, ignore=shutil.ignore_patterns("__pycache__"))
    source = (swapped / "model.py").read_text()
    assert source.count(ONE_EDIT[0]) == 1
    (swapped / "model.py").write_text(source.replace(*ONE_EDIT))

    theirs = _run_client(CLIENT, tmp_path / "torch")
    ours = _run_client(swapped, tmp_path / "scratchrnn")
    assert theirs["rnn"] == "torch.nn.modules.rnn.RNN" and ours["rnn"] == "scratchrnn.core.modules.RNN"
    for key in ("valid_ppl", "test_ppl"):
        assert ours[key] == pytest.approx(theirs[key], rel=PPL_REL_TOL), key
    for out in (tmp_path / "torch", tmp_path / "scratchrnn"):
        _check_onnx(out)
