"""Drop-in parity with torch.nn.RNN / nn.RNNCell for what users do to the outputs (issue 21):
in-place changes before backward, and batched gradients (``is_grads_batched``,
``jacobian(vectorize=True)``, gradcheck's and gradgradcheck's batched-gradient check).

Each check runs the same program on nn.RNN and on ours, both holding the same float64 weights,
and compares the values and gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import F64, max_abs
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import scratchrnn

pytestmark = pytest.mark.usefixtures("one_thread")

T, N, D, H = 4, 3, 5, 6


def pair(**kwargs) -> tuple[nn.Module, nn.Module]:
    """(nn.RNN, scratchrnn.RNN) with the same float64 weights."""
    torch.manual_seed(0)
    theirs = nn.RNN(D, H, dtype=F64, **kwargs)
    return theirs, scratchrnn.RNN.from_torch(theirs)


def cell_pair(**kwargs) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    theirs = nn.RNNCell(D, H, dtype=F64, **kwargs)
    return theirs, scratchrnn.RNNCell.from_torch(theirs)


# Each takes the output and changes it in place; the loss then reads it.
IN_PLACE = {
    "add_": lambda out: out.__iadd__(torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)),
    "relu_inplace": lambda out: nn.ReLU(inplace=True)(out),
    "masked_fill_": lambda out: out.masked_fill_(out > 0.2, 0.5),
    "dropout_inplace": lambda out: F.dropout(out, 0.5, training=True, inplace=True),
}

LAYOUTS = {
    "padded": ({}, (T, N, D)),
    "batch_first": ({"batch_first": True}, (N, T, D)),
    "unbatched": ({}, (T, D)),
    "two_layers_bidirectional": ({"num_layers": 2, "bidirectional": True}, (T, N, D)),
}


def _run(module, x, change, seed):
    """out changed in place, then backward through both outputs; (out, h_n, gradients)."""
    out, h_n = module(x)
    torch.manual_seed(seed)  # the same dropout mask for both modules
    change(out)
    h_n += 1  # h_n too, as nn.RNN allows
    (out.sin().sum() + h_n.square().sum()).backward()
    return out, h_n, [x.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", IN_PLACE)
def test_output_changed_in_place_then_backward(op, layout):
    kwargs, shape = LAYOUTS[layout]
    theirs, ours = pair(**kwargs)
    x = torch.randn(*shape, dtype=F64)
    results = [_run(m, x.clone().requires_grad_(), IN_PLACE[op], seed=1) for m in (theirs, ours)]
    (out_t, h_t, grads_t), (out_o, h_o, grads_o) = results
    assert max_abs(out_o, out_t) < 1e-12 and max_abs(h_o, h_t) < 1e-12
    for g_o, g_t in zip(grads_o, grads_t, strict=True):
        assert max_abs(g_o, g_t) < 1e-12


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("op", IN_PLACE)
def test_cell_output_changed_in_place_then_backward(op, batched):
    # nn.RNNCell refuses this (its tanh saved the very tensor changed: "modified by an inplace
    # operation"); ours gives the gradient of the same program written out of place.
    theirs, ours = cell_pair()
    x = torch.randn(*((N, D) if batched else (D,)), dtype=F64)

    def loss(module, x, in_place):
        h = module(x)
        torch.manual_seed(1)
        h = IN_PLACE[op](h if in_place else h.clone())
        return h.sin().sum()

    x_o, x_t = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss(ours, x_o, in_place=True).backward()
    loss(theirs, x_t, in_place=False).backward()
    assert max_abs(x_o.grad, x_t.grad) < 1e-12
    for p_o, p_t in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert max_abs(p_o.grad, p_t.grad) < 1e-12


def test_output_without_grad_can_be_changed_in_place():
    _, ours = pair()
    with torch.no_grad():
        out, h_n = ours(torch.randn(T, N, D, dtype=F64))
        out += 1
        h_n.mul_(2)


@pytest.mark.skipif(not hasattr(torch, "_lazy_clone"), reason="torch without copy-on-write tensors")
def test_the_callers_copy_costs_nothing_unless_written(loops):
    # The output handed to the caller is a copy-on-write copy of the one the backward saved:
    # nothing is copied by the forward, nor by the backward's reads (a real copy doubled the
    # output's memory: 0.72x nn.RNN's peak at the benchmark's memory shape instead of 0.51x).
    _, ours = pair(num_layers=2)
    x = torch.randn(T, N, D, dtype=F64, requires_grad=True)
    out, _ = ours(x)
    assert torch._C._is_cow_tensor(out)
    out.sum().backward()
    assert torch._C._is_cow_tensor(out)
    out += 1  # the caller's write: now its own memory
    assert not torch._C._is_cow_tensor(out)


# --------------------------------------------------------------------------------------------
# Batched gradients.
# --------------------------------------------------------------------------------------------

GRID = {
    "one_layer": ({}, False),
    "two_layers_bidirectional": ({"num_layers": 2, "bidirectional": True}, False),
    "relu_no_bias": ({"nonlinearity": "relu", "bias": False}, False),
    "dropout_train": ({"num_layers": 2, "dropout": 0.5}, False),
    "packed": ({"num_layers": 2}, True),
}


def _inputs(packed: bool):
    x = torch.randn(T, N, D, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, N, H, dtype=F64, requires_grad=True)
    return x, h0, packed


def _function(module, packed: bool):
    """(x, h0) → the output (a tensor) and h_n; h0 repeated for every layer and direction."""
    layers = module.num_layers * (2 if module.bidirectional else 1)

    def f(x, h0):
        torch.manual_seed(2)  # the same dropout masks at every call
        hx = h0.expand(layers, -1, -1).contiguous()
        if packed:
            x = nn.utils.rnn.pack_padded_sequence(x, [T, T - 1, 1], enforce_sorted=False)
            out, h_n = module(x, hx)
            return nn.utils.rnn.pad_packed_sequence(out)[0], h_n
        return module(x, hx)

    return f


@pytest.mark.parametrize("case", GRID)
def test_grads_batched_equal_one_by_one(case):
    kwargs, packed = GRID[case]
    _, ours = pair(**kwargs)
    x, h0, _ = _inputs(packed)
    out, h_n = _function(ours, packed)(x, h0)
    v_out, v_h = torch.randn(3, *out.shape, dtype=F64), torch.randn(3, *h_n.shape, dtype=F64)
    batched = torch.autograd.grad((out, h_n), (x, h0, *ours.parameters()), (v_out, v_h),
                                  is_grads_batched=True, retain_graph=True)
    for b in range(3):
        one = torch.autograd.grad((out, h_n), (x, h0, *ours.parameters()), (v_out[b], v_h[b]),
                                  retain_graph=True)
        for g_batched, g_one in zip(batched, one, strict=True):
            assert max_abs(g_batched[b], g_one) < 1e-12


@pytest.mark.parametrize("case", ["one_layer", "two_layers_bidirectional"])
def test_func_vmap_over_autograd_grad_equals_one_by_one(case):
    # torch.func's vmap (not the legacy one) around a plain autograd.grad, as nn.RNN allows.
    kwargs, packed = GRID[case]
    _, ours = pair(**kwargs)
    x, h0, _ = _inputs(packed)
    out, _ = _function(ours, packed)(x, h0)
    leaves = (x, h0, *ours.parameters())
    v_out = torch.randn(3, *out.shape, dtype=F64)
    batched = torch.func.vmap(lambda v: torch.autograd.grad(out, leaves, v, retain_graph=True))(v_out)
    for b in range(3):
        one = torch.autograd.grad(out, leaves, v_out[b], retain_graph=True)
        for g_batched, g_one in zip(batched, one, strict=True):
            assert max_abs(g_batched[b], g_one) < 1e-12


def test_jacobian_vectorized_equals_nn_rnn():
    theirs, ours = pair(num_layers=2)
    x = torch.randn(T, 2, D, dtype=F64)
    jacobians = [torch.autograd.functional.jacobian(lambda x, m=m: m(x)[0], x, vectorize=True)
                 for m in (theirs, ours)]
    assert max_abs(jacobians[1], jacobians[0]) < 1e-12


@pytest.mark.parametrize("case", GRID)
def test_gradcheck_with_batched_grad(case):
    kwargs, packed = GRID[case]
    _, ours = pair(**kwargs)
    x, h0, _ = _inputs(packed)
    f = _function(ours, packed)
    assert gradcheck(f, (x, h0), check_batched_grad=True)
    assert gradgradcheck(f, (x, h0), check_batched_grad=True)


def test_cell_gradcheck_with_batched_grad():
    _, ours = cell_pair()
    x = torch.randn(N, D, dtype=F64, requires_grad=True)
    h = torch.randn(N, H, dtype=F64, requires_grad=True)
    assert gradcheck(ours, (x, h), check_batched_grad=True)
    assert gradgradcheck(ours, (x, h), check_batched_grad=True)
