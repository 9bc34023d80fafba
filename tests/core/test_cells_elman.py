"""The Elman RNN stays bit-identical: outputs, h_n and every gradient, in float64, through the C
loops and the PyTorch loops, equal (``torch.equal``) to tensors stored before the cell became a
plug-in (issue 17).

The stored cases (``data/elman_cases.pt``) were written by this file run as a script,
``python tests/core/test_cells_elman.py``, at the commit that added it, before the refactor; do
not regenerate them to make a failing test pass. Bit-identity is defined against the same BLAS:
the file stores one product of the BLAS that made it, and the test is skipped where this machine's
product of the same inputs differs (another CPU or library computes the same sums in another order).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from scratchrnn import RNN, RNNCell
from scratchrnn.core import accel

DATA = Path(__file__).with_name("data") / "elman_cases.pt"
F64 = torch.float64
D, H = 4, 5

# name: (module arguments, T, lengths of a packed batch or N of a padded one, dropout seed or None)
CASES = {
    "L1-tanh": ({}, 6, 3, None),
    "L1-relu-nobias": ({"nonlinearity": "relu", "bias": False}, 6, 3, None),
    "L2-bi-batch_first": ({"num_layers": 2, "bidirectional": True, "batch_first": True}, 5, 4, None),
    "L2-bi-packed-relu": (
        {"num_layers": 2, "bidirectional": True, "nonlinearity": "relu"}, 6, [6, 4, 4, 1], None,
    ),
    "L2-packed-nobias": ({"num_layers": 2, "bias": False}, 5, [5, 3, 2], None),
    "L1-T1": ({}, 1, 2, None),
    "L3-bi-dropout": ({"num_layers": 3, "bidirectional": True, "dropout": 0.4}, 5, 3, 7),
    "L2-bi-packed-dropout": ({"num_layers": 2, "bidirectional": True, "dropout": 0.5}, 5, [5, 5, 2], 11),
    "cell-tanh": ({"cell": True}, None, 3, None),
    "cell-relu-nobias": ({"cell": True, "nonlinearity": "relu", "bias": False}, None, 3, None),
}


def _inputs(name: str) -> dict:
    """The case's module (seeded weights), input, hx and upstream gradients."""
    kwargs, T, batch, seed = CASES[name]
    kwargs = dict(kwargs)
    torch.manual_seed(sum(map(ord, name)))
    if kwargs.pop("cell", False):
        module = RNNCell(D, H, dtype=F64, **kwargs)
        x, hx = torch.randn(batch, D, dtype=F64), torch.randn(batch, H, dtype=F64)
        return {"module": module, "x": x, "hx": hx, "lengths": None, "seed": seed}
    module = RNN(D, H, dtype=F64, **kwargs)
    packed = isinstance(batch, list)
    N = len(batch) if packed else batch
    x = torch.randn(N, T, D, dtype=F64) if module.batch_first else torch.randn(T, N, D, dtype=F64)
    dirs = 2 if module.bidirectional else 1
    hx = torch.randn(module.num_layers * dirs, N, H, dtype=F64)
    return {"module": module, "x": x, "hx": hx, "lengths": batch if packed else None, "seed": seed}


def run(name: str) -> dict[str, torch.Tensor]:
    """Every tensor the case produces: output, h_n, and the gradients of x, hx and each weight."""
    case = _inputs(name)
    module, lengths = case["module"], case["lengths"]
    x = case["x"].clone().requires_grad_()
    hx = case["hx"].clone().requires_grad_()
    module.train(case["seed"] is not None)
    if case["seed"] is not None:
        torch.manual_seed(case["seed"])  # the dropout masks
    if isinstance(module, RNNCell):
        output, h_n = module(x, hx), None
    elif lengths is not None:
        output, h_n = module(pack_padded_sequence(x, lengths), hx)
        output = output.data
    else:
        output, h_n = module(x, hx)
    torch.manual_seed(1)
    loss = (output * torch.randn_like(output)).sum()
    if h_n is not None:
        loss = loss + (h_n * torch.randn_like(h_n)).sum()
    loss.backward()
    result = {"output": output.detach(), "dx": x.grad, "dhx": hx.grad}
    if h_n is not None:
        result["h_n"] = h_n.detach()
    result |= {f"d{n}": p.grad for n, p in module.named_parameters()}
    return result


def _blas_probe() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two matrices and their product on this machine's BLAS."""
    generator = torch.Generator().manual_seed(3)
    A = torch.randn(37, 29, dtype=F64, generator=generator)
    B = torch.randn(29, 23, dtype=F64, generator=generator)
    return A, B, A @ B


LOOPS = ("C", "torch")


@pytest.fixture(scope="module")
def stored():
    if not DATA.exists():
        pytest.skip(f"{DATA} is missing")
    data = torch.load(DATA, weights_only=True)
    A, B, product = data["blas_probe"]
    if not torch.equal(A @ B, product):
        pytest.skip("this BLAS computes the stored product differently: bit-identity is undefined here")
    return data


@pytest.mark.parametrize("loop", LOOPS, ids=["C-loops", "torch-loops"])
@pytest.mark.parametrize("name", list(CASES))
def test_elman_is_bit_identical_to_the_stored_cases(stored, name, loop, one_thread):
    if loop == "C" and not accel.available():
        pytest.skip("the C loops are not available here")
    previous = accel.available()
    accel.set_enabled(loop == "C")
    try:
        result = run(name)
    finally:
        accel.set_enabled(previous)
    expected = stored[f"{name}/{loop}"]
    assert sorted(result) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(result[key], tensor), f"{name} ({loop} loops): {key} differs"


def _write() -> None:
    torch.set_num_threads(1)
    data = {"blas_probe": list(_blas_probe())}
    for loops in LOOPS:
        accel.set_enabled(loops == "C")
        if loops == "C" and not accel.available():
            raise SystemExit("the C loops are needed to write the cases")
        for name in CASES:
            data[f"{name}/{loops}"] = run(name)
    DATA.parent.mkdir(exist_ok=True)
    torch.save(data, DATA)
    print(f"wrote {len(data) - 1} cases to {DATA}")


if __name__ == "__main__":
    sys.exit(_write())
