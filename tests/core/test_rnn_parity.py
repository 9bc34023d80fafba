"""Outputs and gradients of scratchrnn.RNN against nn.RNN's: the grid of layouts and options,
float32, a property test over random shapes, and the GPU.

Shared cases and helpers: rnn_helpers.py. Tolerances: ≤ 1e-10 max abs in float64, ≤ 1e-5
relative in float32, as the issue asks; never loosened to make a test pass.
"""

from __future__ import annotations

import pytest
import torch
from helpers import max_abs, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from rnn_helpers import (
    ABS_TOL_F64,
    F64,
    PACKED_LENGTHS,
    REL_TOL_F32,
    D,
    H,
    compare,
    make_input,
    make_pair,
    parity,
    run_with_grads,
)
from torch import nn

from scratchrnn import RNN, RNNCell
from scratchrnn.core import accel

pytestmark = pytest.mark.usefixtures("one_thread")


INPUT_KINDS = ["padded", "T=1", "N=1", "unbatched", "packed", "packed-unsorted"]


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx=None"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TND", "NTD"])
@pytest.mark.parametrize("num_layers", [1, 2, 3], ids=["L1", "L2", "L3"])
def test_parity_grid(
    num_layers, batch_first, bias, nonlinearity, bidirectional, hx_given, kind, loops, diffs
):
    # The state_dict is copied nn -> ours in half the grid and ours -> nn in the other half.
    into = ("ours", "nn")[(num_layers + bidirectional + hx_given + batch_first) % 2]
    ours, theirs = make_pair(
        num_layers=num_layers, nonlinearity=nonlinearity, bias=bias, batch_first=batch_first,
        bidirectional=bidirectional, into=into,
    )
    torch.manual_seed(2)
    x, hx, kw = make_input(kind, batch_first, 1 + bidirectional, num_layers, hx_given, dtype=F64)
    parity(ours, theirs, x, hx, diffs, **kw)


@pytest.mark.parametrize("use", ["output", "h_n"])
def test_parity_when_only_one_output_is_used(use, diffs):
    # Autograd hands the backward zeros for the unused output; both paths must cope.
    ours, theirs = make_pair(num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    x = torch.randn(6, 3, D, dtype=F64)
    grads = []
    for model in (ours, theirs):
        xi = x.clone().requires_grad_()
        output, h_n = model(xi)
        (output if use == "output" else h_n).pow(2).sum().backward()
        grads.append([xi.grad, *(p.grad for p in model.parameters())])
    for a, b in zip(*grads, strict=True):
        diffs("float64 max abs vs nn.RNN: gradients", max_abs(a, b))
        assert max_abs(a, b) <= ABS_TOL_F64


def test_parity_frozen_weights_and_frozen_input(diffs):
    """Gradients flow when only the input (or only the weights) require them."""
    ours, theirs = make_pair(num_layers=2)
    torch.manual_seed(4)
    x = torch.randn(5, 2, D, dtype=F64)
    # Weights frozen: only dx.
    dxs = []
    for model in (ours, theirs):
        model.requires_grad_(False)
        xi = x.clone().requires_grad_()
        output, _ = model(xi)
        assert output.requires_grad
        output.sum().backward()
        dxs.append(xi.grad)
        model.requires_grad_(True)
    assert max_abs(*dxs) <= ABS_TOL_F64
    # Input needs no gradient (the usual first layer): only the weights.
    for model in (ours, theirs):
        model(x)[0].sum().backward()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        diffs("float64 max abs vs nn.RNN: gradients", max_abs(a.grad, b.grad))
        assert max_abs(a.grad, b.grad) <= ABS_TOL_F64


def test_parity_non_contiguous_input_and_upstream_gradient(diffs):
    ours, theirs = make_pair(num_layers=2, bidirectional=True)
    torch.manual_seed(5)
    base = torch.randn(3, 6, 2 * D, dtype=F64)
    results = []
    for model in (ours, theirs):
        leaf = base.clone().requires_grad_()
        x = leaf[..., ::2].transpose(0, 1)  # (6, 3, D): strided on every dimension
        assert not x.is_contiguous()
        output, h_n = model(x)
        g = torch.randn(output.shape[1], output.shape[0], output.shape[2], dtype=F64,
                        generator=torch.Generator().manual_seed(6)).transpose(0, 1)
        torch.autograd.backward([output, h_n], [g, torch.ones_like(h_n)])
        results.append([output, h_n, leaf.grad, *(p.grad for p in model.parameters())])
    for a, b in zip(*results, strict=True):
        diffs("float64 max abs vs nn.RNN: gradients", max_abs(a.detach(), b.detach()))
        assert max_abs(a.detach(), b.detach()) <= ABS_TOL_F64


def test_parity_non_contiguous_hx_and_weights(loops, diffs):
    """hx, weights and the upstream gradient of h_n as strided views, as a user may pass them."""
    ours, theirs = make_pair(num_layers=2, bidirectional=True)
    torch.manual_seed(19)
    for model in (ours, theirs):  # the same values, stored column-major
        model.weight_hh_l1_reverse = nn.Parameter(model.weight_hh_l1_reverse.detach().t().contiguous().t())
        assert not model.weight_hh_l1_reverse.is_contiguous()
    x = torch.randn(6, 3, D, dtype=F64)
    hx_base = torch.randn(3, 4, H, dtype=F64)
    results = []
    for model in (ours, theirs):
        hx_leaf = hx_base.clone().requires_grad_()
        output, h_n = model(x, hx_leaf.transpose(0, 1))  # (4, 3, H), not contiguous
        g_hn = torch.randn(3, 4, H, dtype=F64, generator=torch.Generator().manual_seed(20))
        torch.autograd.backward([output, h_n], [torch.ones_like(output), g_hn.transpose(0, 1)])
        results.append([output, h_n, hx_leaf.grad, *(p.grad for p in model.parameters())])
    for a, b in zip(*results, strict=True):
        diffs("float64 max abs vs nn.RNN: gradients", max_abs(a.detach(), b.detach()))
        assert max_abs(a.detach(), b.detach()) <= ABS_TOL_F64


@pytest.mark.parametrize(
    "T,N,num_layers,bidirectional,nonlinearity,packed",
    [
        (1, 1, 1, False, "tanh", False),
        (12, 8, 1, False, "tanh", False),
        (9, 4, 2, True, "tanh", False),
        (7, 6, 3, False, "relu", False),
        (7, 6, 2, True, "tanh", True),
    ],
)
def test_parity_float32(T, N, num_layers, bidirectional, nonlinearity, packed, loops, diffs):
    ours, theirs = make_pair(
        8, 16, num_layers=num_layers, bidirectional=bidirectional, nonlinearity=nonlinearity,
        dtype=torch.float32,
    )
    torch.manual_seed(7)
    x = torch.randn(T, N, 8)
    hx = torch.randn(num_layers * (1 + bidirectional), N, 16)
    kw = {"lengths": PACKED_LENGTHS[:N]} if packed else {}
    got, names = run_with_grads(ours, x, hx, **kw)
    want, _ = run_with_grads(theirs, x, hx, **kw)
    compare(got, want, names, rel_err, REL_TOL_F32, diffs, "float32 relative vs nn.RNN")


@settings(max_examples=30, deadline=None)
@given(
    T=st.integers(1, 6),
    N=st.integers(0, 4),
    input_size=st.integers(1, 4),
    hidden_size=st.integers(1, 5),
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    bias=st.booleans(),
    nonlinearity=st.sampled_from(["tanh", "relu"]),
    hx_given=st.booleans(),
    layout=st.sampled_from(["padded", "unbatched", "packed"]),
    c_loops=st.booleans(),
    data=st.data(),
)
def test_parity_property(
    T, N, input_size, hidden_size, num_layers, bidirectional, batch_first, bias, nonlinearity,
    hx_given, layout, c_loops, data, diffs,
):
    ours, theirs = make_pair(
        input_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
        batch_first=batch_first, bias=bias, nonlinearity=nonlinearity,
    )
    torch.manual_seed(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    L = num_layers * (1 + bidirectional)
    kw = {}
    if layout == "unbatched":
        x = torch.randn(T, input_size, dtype=F64)
        hx = torch.randn(L, hidden_size, dtype=F64)
    else:
        if layout == "packed":
            N = max(N, 1)
            lengths = data.draw(st.lists(st.integers(1, T), min_size=N, max_size=N), label="lengths")
            enforce_sorted = data.draw(st.booleans(), label="enforce_sorted")
            if enforce_sorted:
                lengths = sorted(lengths, reverse=True)
            kw = {"lengths": lengths, "enforce_sorted": enforce_sorted}
        shape = (N, T, input_size) if batch_first else (T, N, input_size)
        x = torch.randn(shape, dtype=F64)
        hx = torch.randn(L, N, hidden_size, dtype=F64)
    previous = accel.available()
    accel.set_enabled(c_loops)  # a no-op where the C loops cannot be built
    try:
        parity(ours, theirs, x, hx if hx_given else None, diffs, **kw)
    finally:
        accel.set_enabled(previous)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", ["padded", "packed-unsorted", "unbatched"])
def test_cuda_parity(kind, diffs):
    """On the GPU, float64 against nn.RNN on the CPU (≤ 1e-10), and float32 against the same
    oracle (≤ 1e-5 relative; nn.RNN's own float32 on CUDA is cuDNN, which may use TF32)."""
    config = {"num_layers": 2, "bidirectional": True, "batch_first": True}
    torch.manual_seed(17)
    x, hx, kw = make_input(kind, True, 2, 2, True, dtype=F64)
    ours_cpu, theirs = make_pair(**config)
    ours = RNN(D, H, device="cuda", dtype=F64, **config)
    ours.load_state_dict(ours_cpu.state_dict())
    assert all(p.is_cuda for p in ours.parameters())
    want, names = run_with_grads(theirs, x, hx, **kw)
    got, _ = run_with_grads(ours, x.cuda(), hx.cuda(), **kw)
    assert got[0].is_cuda and got[1].is_cuda
    compare([t.cpu() for t in got], want, names, max_abs, ABS_TOL_F64, diffs,
            "cuda float64 max abs vs nn.RNN")
    ours.float()
    got, _ = run_with_grads(ours, x.float().cuda(), hx.float().cuda(), **kw)
    compare([t.double().cpu() for t in got], want, names, rel_err, REL_TOL_F32, diffs,
            "cuda float32 relative vs nn.RNN")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_cell_and_zero_batch():
    torch.manual_seed(18)
    cell = RNNCell(D, H).cuda()
    reference = nn.RNNCell(D, H)
    reference.load_state_dict(cell.state_dict())
    x = torch.randn(4, D)
    assert rel_err(cell(x.cuda()).cpu(), reference(x)) <= REL_TOL_F32
    rnn = RNN(D, H, 2, device="cuda")
    output, h_n = rnn(torch.zeros(5, 0, D, device="cuda", requires_grad=True))
    (output.sum() + h_n.sum()).backward()
    assert output.shape == (5, 0, H) and h_n.shape == (2, 0, H)
