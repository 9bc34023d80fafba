"""scratchrnn.RNN and RNNCell against torch.nn.RNN and nn.RNNCell, the oracles they must replace.

Every comparison runs in float64 with fixed seeds (float32 only where float32 is the point) and
reports its margin to the ``diffs`` fixture (see conftest.py). Letters: T steps, N batch,
D input features, H hidden units, L layers.

Tolerances: ≤ 1e-10 max abs difference in float64, ≤ 1e-5 relative (max |a − b| / max |b|) in
float32, as the issue asks; never loosened to make a test pass.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Callable

import pytest
import torch
from helpers import max_abs, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.autograd import gradcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import scratchrnn
from scratchrnn import RNN, RNNCell
from scratchrnn.core import accel
from scratchrnn.core.ops import _RNN

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
ABS_TOL_F64 = 1e-10
REL_TOL_F32 = 1e-5
D, H = 3, 5
PACKED_LENGTHS = [7, 5, 5, 2, 1, 1]  # sorted, with ties and several sequences of length 1
UNSORTED_LENGTHS = [2, 7, 1, 5, 1, 5]  # the same multiset, in the caller's order


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def make_pair(
    input_size: int = D,
    hidden_size: int = H,
    *,
    into: str = "ours",
    dtype: torch.dtype = F64,
    device: str = "cpu",
    **kwargs,
) -> tuple[RNN, nn.RNN]:
    """Our RNN and nn.RNN with the same weights, copied through state_dict.

    ``into="ours"`` loads nn.RNN's state_dict into ours, ``into="nn"`` the other way. Different
    seeds before each construction make sure the copy, not the seed, is what makes them equal.
    """
    torch.manual_seed(0)
    theirs = nn.RNN(input_size, hidden_size, dtype=dtype, device=device, **kwargs)
    torch.manual_seed(1)
    ours = RNN(input_size, hidden_size, dtype=dtype, device=device, **kwargs)
    if into == "ours":
        ours.load_state_dict(theirs.state_dict())
    else:
        theirs.load_state_dict(ours.state_dict())
    for (n_ours, p_ours), (n_theirs, p_theirs) in zip(
        ours.named_parameters(), theirs.named_parameters(), strict=True
    ):
        assert n_ours == n_theirs and torch.equal(p_ours, p_theirs)
    return ours, theirs


def run_with_grads(
    model: nn.Module,
    x: Tensor,
    hx: Tensor | None,
    *,
    lengths: list[int] | None = None,
    enforce_sorted: bool = True,
    grad_seed: int = 1234,
) -> tuple[list[Tensor], list[str]]:
    """Forward, then the gradient of a random linear function of output *and* h_n.

    Returns [output, h_n, dx, (dhx,) d<every parameter>] and their names. The input and hx are
    fresh leaves, so the caller's tensors are untouched; the upstream gradients come from a
    generator seeded with ``grad_seed``, so both models see the same ones.
    """
    x = x.detach().clone().requires_grad_()
    hx = None if hx is None else hx.detach().clone().requires_grad_()
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=model.batch_first, enforce_sorted=enforce_sorted)
    else:
        inp = x
    output, h_n = model(inp) if hx is None else model(inp, hx)
    if lengths is not None:
        assert isinstance(output, PackedSequence)
        assert torch.equal(output.batch_sizes, inp.batch_sizes)
        for ours, theirs in ((output.sorted_indices, inp.sorted_indices),
                             (output.unsorted_indices, inp.unsorted_indices)):
            assert (ours is None and theirs is None) or torch.equal(ours, theirs)
        output = output.data
    # Drawn in float64 on the CPU, then cast and moved: the same numbers for any dtype and device.
    gen = torch.Generator().manual_seed(grad_seed)
    g_out = torch.randn(output.shape, generator=gen, dtype=F64).to(output.device, output.dtype)
    g_hn = torch.randn(h_n.shape, generator=gen, dtype=F64).to(h_n.device, h_n.dtype)
    loss = (output * g_out).sum() + (h_n * g_hn).sum()
    names, leaves = ["x"], [x]
    if hx is not None:
        names.append("hx")
        leaves.append(hx)
    for name, p in model.named_parameters():
        names.append(name)
        leaves.append(p)
    grads = torch.autograd.grad(loss, leaves)
    return [output.detach(), h_n.detach(), *grads], ["output", "h_n", *(f"d{n}" for n in names)]


def compare(
    ours: list[Tensor], theirs: list[Tensor], names: list[str], metric, tol: float, record, key: str
) -> None:
    worst = {name: metric(a, b) for name, a, b in zip(names, ours, theirs, strict=True)}
    for name, value in worst.items():
        record(f"{key}: {'output/h_n' if name in ('output', 'h_n') else 'gradients'}", value)
    failed = {name: value for name, value in worst.items() if not value <= tol}
    assert not failed, f"differences above {tol:g}: {failed}"


def parity(ours: nn.Module, theirs: nn.Module, x: Tensor, hx: Tensor | None, record, **kw) -> None:
    """Outputs, h_n and every gradient of ours equal nn's to ≤ 1e-10 (float64)."""
    got, names = run_with_grads(ours, x, hx, **kw)
    want, names_theirs = run_with_grads(theirs, x, hx, **kw)
    assert names == names_theirs
    compare(got, want, names, max_abs, ABS_TOL_F64, record, "float64 max abs vs nn.RNN")


def make_input(kind: str, batch_first: bool, dirs: int, num_layers: int, hx_given: bool, **factory):
    """(x, hx, run_with_grads kwargs) for one input kind of the grid."""
    L = num_layers * dirs
    if kind == "unbatched":
        x = torch.randn(5, D, **factory)
        hx = torch.randn(L, H, **factory) if hx_given else None
        return x, hx, {}
    T, N = {"padded": (7, 4), "T=1": (1, 3), "N=1": (6, 1)}.get(kind, (7, 6))
    x = torch.randn(N, T, D, **factory) if batch_first else torch.randn(T, N, D, **factory)
    hx = torch.randn(L, N, H, **factory) if hx_given else None
    if kind == "packed":
        return x, hx, {"lengths": PACKED_LENGTHS, "enforce_sorted": True}
    if kind == "packed-unsorted":
        return x, hx, {"lengths": UNSORTED_LENGTHS, "enforce_sorted": False}
    return x, hx, {}


# --------------------------------------------------------------------------------------------
# Parity with nn.RNN: the grid
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Parameters: names, init, state_dict, repr, all_weights
# --------------------------------------------------------------------------------------------

CONFIGS = [
    {},
    {"num_layers": 3},
    {"bias": False},
    {"nonlinearity": "relu", "batch_first": True},
    {"num_layers": 2, "bidirectional": True},
    {"num_layers": 2, "bidirectional": True, "bias": False, "dropout": 0.25},
    {"num_layers": 2, "dtype": F64},
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_same_seed_gives_bit_identical_parameters(config):
    torch.manual_seed(42)
    theirs = nn.RNN(4, 6, **config)
    torch.manual_seed(42)
    ours = RNN(4, 6, **config)
    named_ours, named_theirs = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert list(named_ours) == list(named_theirs)  # names and registration order
    for name, p in named_theirs.items():
        assert named_ours[name].dtype == p.dtype and torch.equal(named_ours[name], p), name
    # And the RNG is left in the same state, so whatever the caller draws next is the same too.
    torch.manual_seed(42)
    nn.RNN(4, 6, **config)
    after_theirs = torch.rand(3)
    torch.manual_seed(42)
    RNN(4, 6, **config)
    assert torch.equal(torch.rand(3), after_theirs)


@pytest.mark.parametrize("config", [{}, {"bias": False}, {"nonlinearity": "relu"}, {"dtype": F64}], ids=str)
def test_cell_same_seed_gives_bit_identical_parameters(config):
    torch.manual_seed(42)
    theirs = nn.RNNCell(4, 6, **config)
    torch.manual_seed(42)
    ours = RNNCell(4, 6, **config)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert (ours.bias_ih is None) == (theirs.bias_ih is None)


def test_default_init_is_uniform_in_one_over_sqrt_h():
    torch.manual_seed(0)
    model = RNN(4, 25, num_layers=2, bidirectional=True)
    for p in model.parameters():
        assert p.abs().max().item() <= 1 / 25**0.5
    assert min(p.abs().max().item() for p in model.parameters()) > 0.15  # it fills the range


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_state_dict_loads_both_ways(config):
    torch.manual_seed(0)
    theirs = nn.RNN(4, 6, **config)
    torch.manual_seed(1)
    ours = RNN(4, 6, **config)
    sd_ours, sd_theirs = ours.state_dict(), theirs.state_dict()
    assert list(sd_ours) == list(sd_theirs)
    assert all(sd_ours[k].shape == sd_theirs[k].shape for k in sd_ours)
    ours.load_state_dict(sd_theirs)  # strict: no missing or unexpected key
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(2)
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_cell_state_dict_loads_both_ways():
    torch.manual_seed(0)
    theirs, ours = nn.RNNCell(4, 6), RNNCell(4, 6)
    ours.load_state_dict(theirs.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters(), strict=True))
    ours.reset_parameters()
    theirs.load_state_dict(ours.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters(), strict=True))


REPR_CONFIGS = [
    *CONFIGS,
    {"num_layers": 3, "bias": False, "batch_first": True, "dropout": 0.5, "bidirectional": True},
    {"nonlinearity": "relu", "num_layers": 2, "dropout": 1},
]


@pytest.mark.parametrize("config", REPR_CONFIGS, ids=str)
def test_repr_matches_nn(config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropout-with-one-layer warning is tested elsewhere
        assert repr(RNN(4, 6, **config)) == "scratchrnn." + repr(nn.RNN(4, 6, **config))


@pytest.mark.parametrize(
    "config",
    [{}, {"bias": False}, {"nonlinearity": "relu"}, {"bias": False, "nonlinearity": "relu"}],
    ids=str,
)
def test_cell_repr_matches_nn(config):
    assert repr(RNNCell(4, 6, **config)) == "scratchrnn." + repr(nn.RNNCell(4, 6, **config))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_attributes_and_all_weights_match_nn(config):
    ours, theirs = make_pair(4, 6, into="ours", **config)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional", "nonlinearity", "mode", "proj_size"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert len(ours.all_weights) == len(theirs.all_weights) == ours.num_layers * (1 + ours.bidirectional)
    registered = set(map(id, ours.parameters()))
    for group_ours, group_theirs in zip(ours.all_weights, theirs.all_weights, strict=True):
        assert len(group_ours) == len(group_theirs)
        for a, b in zip(group_ours, group_theirs, strict=True):
            assert isinstance(a, nn.Parameter) and id(a) in registered  # the registered tensors
            assert torch.equal(a, b)


def test_flatten_parameters_exists_and_changes_nothing():
    ours, _ = make_pair(num_layers=2)
    x = torch.randn(4, 2, D, dtype=F64)
    before = ours(x)[0]
    assert ours.flatten_parameters() is None
    assert torch.equal(ours(x)[0], before)


def test_module_moves_and_casts_like_any_module(diffs):
    ours, theirs = make_pair(dtype=torch.float32, num_layers=2)
    ours.double()
    theirs.double()
    x = torch.randn(4, 2, D, dtype=F64)
    diffs("float64 max abs vs nn.RNN: output/h_n", max_abs(ours(x)[0], theirs(x)[0]))
    assert max_abs(ours(x)[0], theirs(x)[0]) <= ABS_TOL_F64


# --------------------------------------------------------------------------------------------
# The autograd Function: gradcheck, one node, double backward, what is saved
# --------------------------------------------------------------------------------------------


def functional(model: RNN, packed_lengths: list[int] | None = None) -> Callable:
    """The module as a function of (x, hx, *weights), for gradcheck.

    With ``packed_lengths``, x is a PackedSequence's data (rows, D) for those (sorted) lengths.
    """
    names = [n for n, _ in model.named_parameters()]
    batch_sizes = None
    if packed_lengths is not None:
        T = max(packed_lengths)
        dummy = torch.zeros(T, len(packed_lengths), 1)
        batch_sizes = pack_padded_sequence(dummy, packed_lengths).batch_sizes

    def f(x, hx, *weights):
        inp = PackedSequence(x, batch_sizes) if batch_sizes is not None else x
        output, h_n = torch.func.functional_call(model, dict(zip(names, weights, strict=True)), (inp, hx))
        return (output.data if batch_sizes is not None else output), h_n

    return f


@pytest.mark.parametrize(
    "num_layers,bidirectional,nonlinearity,lengths",
    [
        (1, False, "tanh", None),
        (1, True, "tanh", None),
        (2, False, "relu", None),
        (2, True, "tanh", None),
        (1, False, "tanh", [4, 3, 3, 1]),
        (2, True, "tanh", [4, 3, 3, 1]),
    ],
)
def test_gradcheck(num_layers, bidirectional, nonlinearity, lengths, loops):
    torch.manual_seed(0)
    model = RNN(3, 4, num_layers, nonlinearity=nonlinearity, bidirectional=bidirectional, dtype=F64)
    N = len(lengths) if lengths else 3
    x = torch.randn(sum(lengths), 3, dtype=F64) if lengths else torch.randn(4, N, 3, dtype=F64)
    hx = torch.randn(num_layers * (1 + bidirectional), N, 4, dtype=F64)
    inputs = (x.requires_grad_(), hx.requires_grad_(),
              *(p.detach().clone().requires_grad_() for p in model.parameters()))
    f = functional(model, lengths)
    # The gradient really is ours: the Function's node produced it.
    assert type(f(*inputs)[1].grad_fn).__name__ == f"{_RNN.__name__}Backward"
    assert gradcheck(f, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


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


@pytest.mark.parametrize("other_path", [False, True], ids=["rnn-only", "plus-another-path"])
@pytest.mark.parametrize("upstream", ["square", "linear"])
@pytest.mark.parametrize("wrt", ["input", "weight", "backward()"])
def test_double_backward_equals_nn(other_path, upstream, wrt, loops, diffs):
    # This test used to assert that double backward raises. Now the second derivative is autograd
    # applied to our hand-written BPTT (its PyTorch loop, run in differentiable torch ops when a
    # graph of the backward is wanted); it must equal nn.RNN's, also when the loss reaches x
    # another way too, and with respect to the input, a weight, or every leaf (backward()).
    results = []
    for model in make_pair(num_layers=2):
        torch.manual_seed(3)
        x = torch.randn(3, 2, D, dtype=F64, requires_grad=True)
        out = model(x)[0]
        loss = out.pow(2).sum() if upstream == "square" else out.sum()
        if other_path:
            loss = loss + x.pow(3).sum()
        (dx,) = torch.autograd.grad(loss, x, create_graph=True)
        penalty = dx.pow(2).sum()
        if wrt == "input":
            results.append(torch.autograd.grad(penalty, x))
        elif wrt == "weight":
            results.append(torch.autograd.grad(penalty, model.weight_hh_l0))
        else:
            penalty.backward()
            results.append([x.grad, *(p.grad for p in model.parameters())])
    got, want = results
    compare(got, want, [str(i) for i in range(len(got))], max_abs, ABS_TOL_F64, diffs,
            "float64 max abs vs nn.RNN (second order)")


def graph_nodes(tensor: Tensor) -> list:
    seen, stack = [], [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return seen


@pytest.mark.parametrize("batch_first", [False, True])
def test_one_call_is_one_autograd_node(batch_first):
    ours, _ = make_pair(num_layers=3, bidirectional=True, batch_first=batch_first)
    node_name = f"{_RNN.__name__}Backward"
    counts = []
    for T in (2, 20):
        x = torch.randn(T, 4, D, dtype=F64, requires_grad=True)
        output, h_n = ours(x.transpose(0, 1) if batch_first else x)
        assert type(h_n.grad_fn).__name__ == node_name
        nodes = graph_nodes(output)
        assert [type(n).__name__ for n in nodes].count(node_name) == 1
        assert h_n.grad_fn in nodes  # output and h_n come from the same node
        # output is at most a view or two (reshape, batch_first's transpose) away from the node.
        node, hops = output.grad_fn, 0
        while type(node).__name__ != node_name:
            assert type(node).__name__ in {"ViewBackward0", "TransposeBackward0", "UnsafeViewBackward0"}
            node, hops = node.next_functions[0][0], hops + 1
        assert hops <= 2
        counts.append(len(nodes))
    assert counts[0] == counts[1]  # no per-step chain: the graph does not grow with T


def test_packed_call_is_one_autograd_node():
    ours, _ = make_pair(num_layers=2, bidirectional=True)
    x = torch.randn(7, 6, D, dtype=F64, requires_grad=True)
    output, h_n = ours(pack_padded_sequence(x, UNSORTED_LENGTHS, enforce_sorted=False))
    node_name = f"{_RNN.__name__}Backward"
    assert type(output.data.grad_fn).__name__ == node_name
    assert [type(n).__name__ for n in graph_nodes(h_n)].count(node_name) == 1


def test_no_grad_builds_no_graph_and_saves_nothing():
    ours, _ = make_pair(num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, D, dtype=F64, requires_grad=True)
    hx = torch.randn(4, 3, H, dtype=F64, requires_grad=True)
    saved = []
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t)
    with torch.no_grad(), hooks:
        output, h_n = ours(x, hx)
    assert not output.requires_grad and not h_n.requires_grad
    assert output.grad_fn is None and h_n.grad_fn is None
    assert saved == []
    # Nothing requiring grad at all (weights frozen, plain input) builds no graph either.
    ours.requires_grad_(False)
    output, h_n = ours(x.detach(), hx.detach())
    assert output.grad_fn is None and not output.requires_grad


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_saves_only_what_bptt_needs(dropout):
    """Saved: x, hx, the weights, every layer's output (and, with dropout, each mask and the
    dropped-out layer input): nothing per step, no pre-activations."""
    L, T, N, dirs = 3, 6, 4, 2
    ours, _ = make_pair(num_layers=L, bidirectional=True, dropout=dropout)
    x = torch.randn(T, N, D, dtype=F64, requires_grad=True)
    hx = torch.randn(L * dirs, N, H, dtype=F64, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        output, h_n = ours(x, hx)
    n_weights = sum(p.numel() for p in ours.parameters())
    layer_output = T * N * dirs * H
    budget = x.numel() + hx.numel() + n_weights + L * layer_output
    if dropout:
        budget += 2 * (L - 1) * layer_output  # masks and the layer inputs after dropout
    assert sum(saved) <= budget, (sum(saved), budget)
    (output.sum() + h_n.sum()).backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        output.sum().backward()  # the saved tensors were freed after the first backward


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("kind", ["padded", "unbatched", "packed-unsorted"])
def test_forward_never_touches_the_callers_tensors(kind, grad):
    ours, _ = make_pair(num_layers=2, bidirectional=True)
    torch.manual_seed(10)
    x, hx, kw = make_input(kind, False, 2, 2, True, dtype=F64)
    x.requires_grad_(grad)
    hx.requires_grad_(grad)
    x_copy, hx_copy = x.detach().clone(), hx.detach().clone()
    versions = (x._version, hx._version)
    params = [(p._version, p.detach().clone()) for p in ours.parameters()]
    if kw:
        inp = pack_padded_sequence(x, kw["lengths"], enforce_sorted=kw["enforce_sorted"])
        data_copy, data_version = inp.data.detach().clone(), inp.data._version
    else:
        inp = x
    with torch.set_grad_enabled(grad):
        output, h_n = ours(inp, hx)
    if grad:
        ((output.data if kw else output).pow(2).sum() + h_n.pow(2).sum()).backward()
    assert (x._version, hx._version) == versions
    assert torch.equal(x.detach(), x_copy) and torch.equal(hx.detach(), hx_copy)
    for p, (version, copy) in zip(ours.parameters(), params, strict=True):
        assert p._version == version and torch.equal(p.detach(), copy)
    if kw:
        assert inp.data._version == data_version and torch.equal(inp.data.detach(), data_copy)


# --------------------------------------------------------------------------------------------
# nn.RNN's semantics, PyTorch's own tests (test/test_nn.py) rewritten for ours
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["padded", "unbatched", "packed", "packed-unsorted"])
def test_hx_none_equals_zeros(kind):
    ours, _ = make_pair(num_layers=2, bidirectional=True)
    torch.manual_seed(11)
    x, hx, kw = make_input(kind, False, 2, 2, True, dtype=F64)
    inp = pack_padded_sequence(x, kw["lengths"], enforce_sorted=kw["enforce_sorted"]) if kw else x
    out_none, h_none = ours(inp)
    out_zero, h_zero = ours(inp, torch.zeros_like(hx))
    assert torch.equal(out_none.data if kw else out_none, out_zero.data if kw else out_zero)
    assert torch.equal(h_none, h_zero)


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
    assert str(ours[0].message) == str(theirs[0].message)
    assert ours[0].filename == theirs[0].filename  # torch's __init__ warns for both


@pytest.mark.parametrize(
    "config", [{}, {"num_layers": 2, "bidirectional": True, "batch_first": True}], ids=["L1", "L2-bi-NTD"]
)
def test_zero_batch_forward_and_backward(config):
    ours, theirs = make_pair(**config)
    shape = (0, 5, D) if config.get("batch_first") else (5, 0, D)
    for model in (ours, theirs):
        x = torch.zeros(shape, dtype=F64, requires_grad=True)
        output, h_n = model(x)
        dirs = 1 + model.bidirectional
        assert output.shape == (*shape[:2], dirs * H)
        assert h_n.shape == (model.num_layers * dirs, 0, H)
        (output.sum() + h_n.sum()).backward()
        assert x.grad.shape == x.shape
        for p in model.parameters():
            assert torch.equal(p.grad, torch.zeros_like(p))
        model.zero_grad()


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layout", ["TND", "NTD", "unbatched"])
def test_sequence_length_zero_raises_like_nn(bidirectional, layout):
    shape = {"TND": (0, 4, D), "NTD": (4, 0, D), "unbatched": (0, D)}[layout]
    x = torch.ones(shape, dtype=F64)
    ours, theirs = make_pair(bidirectional=bidirectional, batch_first=layout == "NTD")
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0"):
        theirs(x)
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0"):
        ours(x)


# --------------------------------------------------------------------------------------------
# Errors: the same exception type as nn's, and a message saying what was expected and got
# --------------------------------------------------------------------------------------------


def _packed(lengths=PACKED_LENGTHS, enforce_sorted=True, dtype=torch.float32):
    x = torch.randn(max(lengths), len(lengths), D, dtype=dtype)
    return pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)


# (id, the call on module `m` (torch.nn or scratchrnn), regexes the message of ours must match)
RNN_ERRORS: list[tuple[str, Callable, list[str]]] = [
    ("input 1-D", lambda m: m.RNN(D, H)(torch.randn(D)), [r"2D or 3D", r"got 1D"]),
    ("input 4-D", lambda m: m.RNN(D, H)(torch.randn(2, 2, 2, D)), [r"2D or 3D", r"got 4D"]),
    ("input_size", lambda m: m.RNN(D, H)(torch.randn(4, 2, D + 1)), [r"Expected 3, got 4"]),
    ("input_size unbatched", lambda m: m.RNN(D, H)(torch.randn(4, 1)), [r"Expected 3, got 1"]),
    ("input_size packed", lambda m: m.RNN(D + 2, H)(_packed()), [r"Expected 5, got 3"]),
    ("hx batch", lambda m: m.RNN(D, H)(torch.randn(4, 2, D), torch.randn(1, 3, H)),
     [r"\(1, 2, 5\)", r"got \[1, 3, 5\]"]),
    ("hx layers", lambda m: m.RNN(D, H, 2)(torch.randn(4, 2, D), torch.randn(1, 2, H)),
     [r"\(2, 2, 5\)", r"got \[1, 2, 5\]"]),
    ("hx directions", lambda m: m.RNN(D, H, bidirectional=True)(torch.randn(4, 2, D), torch.randn(1, 2, H)),
     [r"\(2, 2, 5\)", r"got \[1, 2, 5\]"]),
    ("hx hidden_size", lambda m: m.RNN(D, H)(torch.randn(4, 2, D), torch.randn(1, 2, H + 1)),
     [r"\(1, 2, 5\)", r"got \[1, 2, 6\]"]),
    ("hx unbatched", lambda m: m.RNN(D, H)(torch.randn(4, D), torch.randn(2, H)),
     [r"\(1, 1, 5\)", r"got \[2, 1, 5\]"]),
    ("hx packed", lambda m: m.RNN(D, H)(_packed(), torch.randn(1, 5, H)),
     [r"\(1, 6, 5\)", r"got \[1, 5, 5\]"]),
    ("hx packed unsorted", lambda m: m.RNN(D, H)(_packed(UNSORTED_LENGTHS, False), torch.randn(1, 6, H + 1)),
     [r"\(1, 6, 5\)", r"got \[1, 6, 6\]"]),
    ("hx packed 2-D", lambda m: m.RNN(D, H)(_packed(), torch.randn(6, H)), [r"\(1, 6, 5\)", r"got \[6, 5\]"]),
    ("hx 2-D for batched", lambda m: m.RNN(D, H)(torch.randn(4, 2, D), torch.randn(2, H)),
     [r"3-D", r"got 2-D"]),
    ("hx 3-D for unbatched", lambda m: m.RNN(D, H)(torch.randn(4, D), torch.randn(1, 1, H)),
     [r"2-D", r"got 3-D"]),
    ("hx 1-D for unbatched", lambda m: m.RNN(D, H)(torch.randn(4, D), torch.randn(H)), [r"2-D", r"got 1-D"]),
    ("input dtype", lambda m: m.RNN(D, H)(torch.randn(4, 2, D, dtype=F64)),
     [r"input dtype \(torch.float64\)", r"weight dtype \(torch.float32\)"]),
    ("input dtype packed", lambda m: m.RNN(D, H, dtype=F64)(_packed()),
     [r"input dtype \(torch.float32\)", r"weight dtype \(torch.float64\)"]),
    ("hx dtype", lambda m: m.RNN(D, H)(torch.randn(4, 2, D), torch.randn(1, 2, H, dtype=F64)),
     [r"Double and Float"]),
    ("seq_len 0", lambda m: m.RNN(D, H)(torch.randn(0, 2, D)), [r"larger than 0"]),
    # An unknown nonlinearity: our message lists our seven (tests/core/test_options.py).
    ("dropout < 0", lambda m: m.RNN(D, H, dropout=-0.1), [r"range \[0, 1\]"]),
    ("dropout > 1", lambda m: m.RNN(D, H, dropout=1.5), [r"range \[0, 1\]"]),
    ("dropout bool", lambda m: m.RNN(D, H, dropout=True), [r"range \[0, 1\]"]),
    ("dropout str", lambda m: m.RNN(D, H, dropout="0.5"), [r"number in range \[0, 1\]"]),
    ("input_size 0", lambda m: m.RNN(0, H), [r"input_size must be greater than zero"]),
    ("hidden_size -1", lambda m: m.RNN(D, -1), [r"hidden_size must be greater than zero"]),
    ("num_layers 0", lambda m: m.RNN(D, H, 0), [r"num_layers must be greater than zero"]),
    ("input_size float", lambda m: m.RNN(3.0, H), [r"input_size should be of type int", r"got: float"]),
    ("hidden_size float", lambda m: m.RNN(D, 5.0), [r"hidden_size should be of type int", r"got: float"]),
    ("num_layers float", lambda m: m.RNN(D, H, 2.0), [r"float"]),
    ("hidden_size bool", lambda m: m.RNN(D, True), [r"bool"]),
    ("bias int", lambda m: m.RNN(D, H, bias=1), [r"bias should be of type bool", r"got: int"]),
    ("batch_first str", lambda m: m.RNN(D, H, batch_first="yes"),
     [r"batch_first should be of type bool", r"got: str"]),
    ("proj_size", lambda m: m.RNN(D, H, proj_size=2), [r"proj_size", r"only supported for LSTM"]),
    ("proj_size 0", lambda m: m.RNN(D, H, proj_size=0), [r"proj_size", r"only supported for LSTM"]),
    ("unknown keyword", lambda m: m.RNN(D, H, foo=1), [r"foo"]),
]

CELL_ERRORS: list[tuple[str, Callable, list[str]]] = [
    ("input 0-D", lambda m: m.RNNCell(D, H)(torch.randn(())), [r"1D or 2D", r"got 0D"]),
    ("input 3-D", lambda m: m.RNNCell(D, H)(torch.randn(2, 2, D)), [r"1D or 2D", r"got 3D"]),
    ("hx 3-D", lambda m: m.RNNCell(D, H)(torch.randn(2, D), torch.randn(1, 2, H)), [r"1D or 2D", r"got 3D"]),
    ("input_size", lambda m: m.RNNCell(D, H)(torch.randn(2, D + 1)), [r"3", r"got 4"]),
    ("input_size 1-D", lambda m: m.RNNCell(D, H)(torch.randn(D + 1)), [r"3", r"got 4"]),
    ("hidden_size", lambda m: m.RNNCell(D, H)(torch.randn(2, D), torch.randn(2, H + 1)), [r"5", r"got.*6"]),
    ("batch", lambda m: m.RNNCell(D, H)(torch.randn(2, D), torch.randn(3, H)), [r"2", r"3"]),
    ("hx 1-D for 2-D input", lambda m: m.RNNCell(D, H)(torch.randn(2, D), torch.randn(H)), [r"2", r"5"]),
    ("hx 2-D for 1-D input", lambda m: m.RNNCell(D, H)(torch.randn(D), torch.randn(1, H)), [r"5", r"got"]),
    ("input dtype", lambda m: m.RNNCell(D, H)(torch.randn(2, D, dtype=F64)), [r"Double and Float"]),
    ("hx dtype", lambda m: m.RNNCell(D, H)(torch.randn(2, D), torch.randn(2, H, dtype=F64)),
     [r"Double and Float"]),
    ("hidden_size float", lambda m: m.RNNCell(D, 5.0), [r"float"]),
]


def _assert_same_error(call: Callable, patterns: list[str]) -> None:
    with pytest.raises(Exception) as theirs:  # nn's type is what we learn here
        call(nn)
    expected_type = type(theirs.value)
    with pytest.raises(Exception) as ours:  # compared exactly below
        call(scratchrnn)
    assert type(ours.value) is expected_type, (
        f"nn raised {expected_type.__name__}({theirs.value}), ours {type(ours.value).__name__}({ours.value})"
    )
    message = str(ours.value)
    assert message == str(theirs.value)  # torch's words exactly
    for pattern in patterns:
        assert re.search(pattern, message), f"{pattern!r} not in {message!r}"


@pytest.mark.parametrize("case", RNN_ERRORS, ids=[c[0] for c in RNN_ERRORS])
def test_rnn_errors_match_nn(case):
    _, call, patterns = case
    _assert_same_error(call, patterns)


@pytest.mark.parametrize("case", CELL_ERRORS, ids=[c[0] for c in CELL_ERRORS])
def test_cell_errors_match_nn(case):
    _, call, patterns = case
    _assert_same_error(call, patterns)


def test_cell_accepts_and_rejects_what_nn_does_when_nn_does():
    # nn.RNNCell accepts an unknown nonlinearity until forward, and a hidden size of 0.
    for m in (nn, scratchrnn):
        cell = m.RNNCell(D, H, nonlinearity="swish")
        with pytest.raises(RuntimeError, match=r"^Unknown nonlinearity: swish$"):
            cell(torch.randn(2, D))
        x = torch.randn(2, D, requires_grad=True)
        h = m.RNNCell(D, 0)(x)
        assert h.shape == (2, 0)


# --------------------------------------------------------------------------------------------
# RNNCell
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("hx_given", [True, False], ids=["hx", "hx=None"])
@pytest.mark.parametrize("shape", [(4, D), (D,), (1, D), (0, D)], ids=["N=4", "unbatched", "N=1", "N=0"])
def test_cell_parity(shape, hx_given, bias, nonlinearity, loops, diffs):
    torch.manual_seed(0)
    theirs = nn.RNNCell(D, H, bias=bias, nonlinearity=nonlinearity, dtype=F64)
    torch.manual_seed(1)
    ours = RNNCell(D, H, bias=bias, nonlinearity=nonlinearity, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    torch.manual_seed(15)
    x = torch.randn(shape, dtype=F64)
    hx = torch.randn((*shape[:-1], H), dtype=F64) if hx_given else None
    results = []
    for model in (ours, theirs):
        xi = x.clone().requires_grad_()
        hi = None if hx is None else hx.clone().requires_grad_()
        h = model(xi, hi)
        assert h.shape == (*shape[:-1], H)
        g = torch.randn(h.shape, dtype=F64, generator=torch.Generator().manual_seed(16))
        leaves = [xi] + ([hi] if hi is not None else []) + list(model.parameters())
        results.append([h.detach(), *torch.autograd.grad((h * g).sum(), leaves)])
    for a, b in zip(*results, strict=True):
        diffs("float64 max abs vs nn.RNNCell", max_abs(a, b))
        assert max_abs(a, b) <= ABS_TOL_F64


def test_cell_is_one_autograd_node_and_gradchecks():
    torch.manual_seed(0)
    cell = RNNCell(3, 4, dtype=F64)
    x = torch.randn(2, 3, dtype=F64, requires_grad=True)
    hx = torch.randn(2, 4, dtype=F64, requires_grad=True)
    h = cell(x, hx)
    assert f"{_RNN.__name__}Backward" in {type(n).__name__ for n in graph_nodes(h)}
    names = [n for n, _ in cell.named_parameters()]

    def f(x, hx, *weights):
        return torch.func.functional_call(cell, dict(zip(names, weights, strict=True)), (x, hx))

    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    assert gradcheck(f, (x, hx, *params), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_cell_steps_equal_the_rnn(diffs):
    """Unrolling RNNCell over T steps gives nn.RNN's output (and the same weights load)."""
    torch.manual_seed(0)
    rnn = nn.RNN(D, H, dtype=F64)
    cell = RNNCell(D, H, dtype=F64)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in rnn.state_dict().items()})
    x = torch.randn(6, 2, D, dtype=F64)
    h, steps = torch.zeros(2, H, dtype=F64), []
    for x_t in x:
        h = cell(x_t, h)
        steps.append(h)
    diffs("float64 max abs vs nn.RNN: output/h_n", max_abs(torch.stack(steps), rnn(x)[0]))
    assert max_abs(torch.stack(steps), rnn(x)[0]) <= ABS_TOL_F64


# --------------------------------------------------------------------------------------------
# CUDA
# --------------------------------------------------------------------------------------------


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
