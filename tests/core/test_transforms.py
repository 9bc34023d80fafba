"""scratchrnn.RNN and GRU under PyTorch's function transforms, against nn.RNN and nn.GRU (CPU,
float64, ≤ 1e-10): every test over CONFIGS runs for each built-in cell.

Forward mode is our hand-written tangent recurrence (``functional.rnn_jvp``); reverse mode our BPTT;
second derivatives (hessian, gradgradcheck, double backward) autograd applied to our BPTT's PyTorch
loop; vmap our rule that folds the mapped dimension into the batch (nn.RNN has no batching rule,
so there the oracle is a Python loop over the mapped dimension).
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from helpers import ABS_TOL_F64, F64, max_abs
from torch import Tensor, nn
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence
from torch.utils._pytree import tree_leaves

from scratchrnn import GRU, RNN, RNNCell

pytestmark = pytest.mark.usefixtures("one_thread")

D, H = 3, 4
LENGTHS = [4, 3, 3, 1]

CONFIGS = {
    "L1-tanh": {},
    "L2-bi-relu": {"num_layers": 2, "bidirectional": True, "nonlinearity": "relu"},
    "L2-bi-NTD": {"num_layers": 2, "bidirectional": True, "batch_first": True},
    "L1-nobias": {"bias": False},
    "L2-bi-gru": {"cell": "gru", "num_layers": 2, "bidirectional": True},
    "L1-gru-nobias": {"cell": "gru", "bias": False},
}
SMALL = ["L1-tanh", "L2-bi-relu", "L1-gru-nobias"]  # for the costlier transforms


def pair(cell: str = "rnn", **kwargs) -> tuple[RNN | GRU, nn.RNN | nn.GRU]:
    """Ours and torch's module of a cell ("rnn" or "gru"), with the same weights."""
    torch.manual_seed(0)
    theirs = (nn.GRU if cell == "gru" else nn.RNN)(D, H, dtype=F64, **kwargs)
    ours = (GRU if cell == "gru" else RNN)(D, H, dtype=F64, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def as_function(model: nn.Module, packed: bool = False):
    """(params, x, hx) ↦ (output, h_n); with ``packed``, x is a PackedSequence's data for LENGTHS."""
    batch_sizes = pack_padded_sequence(torch.zeros(max(LENGTHS), len(LENGTHS), 1), LENGTHS).batch_sizes

    def f(params: dict, x: Tensor, hx: Tensor):
        inp = PackedSequence(x, batch_sizes) if packed else x
        output, h_n = functional_call(model, params, (inp, hx))
        return (output.data if packed else output), h_n

    return f


def inputs(model: nn.Module, packed: bool = False, unbatched: bool = False):
    torch.manual_seed(1)
    dirs = 1 + model.bidirectional
    N = len(LENGTHS) if packed else 2
    if packed:
        x = torch.randn(sum(LENGTHS), D, dtype=F64)
    elif unbatched:
        x = torch.randn(5, D, dtype=F64)
    else:
        x = torch.randn(*((N, 5) if model.batch_first else (5, N)), D, dtype=F64)
    hx_shape = (model.num_layers * dirs, H) if unbatched else (model.num_layers * dirs, N, H)
    params = {k: v.detach() for k, v in model.named_parameters()}
    return params, x, torch.randn(hx_shape, dtype=F64)


def tangents_like(*trees):
    torch.manual_seed(2)
    return tuple(torch.utils._pytree.tree_map(torch.randn_like, t) for t in trees)


def assert_close(got, want, diffs, key: str) -> None:
    got, want = tree_leaves(got), tree_leaves(want)
    assert len(got) == len(want)
    worst = max(max_abs(a, b) for a, b in zip(got, want, strict=True))
    diffs(f"float64 max abs vs nn.RNN: {key}", worst)
    assert worst <= ABS_TOL_F64


def both(fn, ours: nn.Module, theirs: nn.Module, packed: bool = False, unbatched: bool = False,
         oracle=None):
    """fn(f, params, x, hx) for ours and for nn.RNN, on the same inputs.

    nn.RNN's packed path hands the batch sizes' data pointer to its kernel, which torch.func's
    wrapped tensors do not have; for packed input its numbers come from ``oracle(f, params, x,
    hx)`` instead, written with torch.autograd.functional (plain autograd, double backward for
    forward mode).
    """
    theirs_fn = oracle if packed else fn
    return [fn(as_function(ours, packed), *inputs(ours, packed, unbatched)),
            theirs_fn(as_function(theirs, packed), *inputs(theirs, packed, unbatched))]


def on_tensors(f, names):
    """f(params, x, hx) as a function of (x, hx, *weights), for torch.autograd.functional."""
    return lambda x, hx, *w: f(dict(zip(names, w, strict=True)), x, hx)


def loss_of(f):
    return lambda p, x, hx: sum(o.pow(2).sum() for o in f(p, x, hx))


# --------------------------------------------------------------------------------------------
# Forward mode, reverse mode, and both: wrt the input, hx and every weight at once
# --------------------------------------------------------------------------------------------


LAYOUTS = [("padded", False, False), ("packed", True, False), ("unbatched", False, True)]


@pytest.mark.parametrize("layout,packed,unbatched", LAYOUTS, ids=[c[0] for c in LAYOUTS])
@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_jvp_equals_nn(config, layout, packed, unbatched, loops, diffs):
    def fn(f, params, x, hx):
        return jvp(f, (params, x, hx), tangents_like(params, x, hx))

    def oracle(f, params, x, hx):
        t_params, t_x, t_hx = tangents_like(params, x, hx)
        out, out_dot = torch.autograd.functional.jvp(
            on_tensors(f, list(params)), (x, hx, *params.values()), (t_x, t_hx, *t_params.values()))
        return out, out_dot

    assert_close(*both(fn, *pair(**config), packed, unbatched, oracle), diffs, "jvp")


@pytest.mark.parametrize("layout,packed,unbatched", LAYOUTS, ids=[c[0] for c in LAYOUTS])
@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_vjp_and_grad_equal_nn(config, layout, packed, unbatched, loops, diffs):
    def fn(f, params, x, hx):
        outputs, pullback = vjp(f, params, x, hx)
        return pullback(tangents_like(outputs)[0]), grad(loss_of(f), (0, 1, 2))(params, x, hx)

    def oracle(f, params, x, hx):
        g = on_tensors(f, list(params))
        args = (x, hx, *params.values())
        _, pulled = torch.autograd.functional.vjp(g, args, tangents_like(f(params, x, hx))[0])
        _, grads = torch.autograd.functional.vjp(lambda *a: sum(o.pow(2).sum() for o in g(*a)), args)
        as_tree = lambda t: (dict(zip(params, t[2:], strict=True)), t[0], t[1])  # noqa: E731
        return as_tree(pulled), as_tree(grads)

    assert_close(*both(fn, *pair(**config), packed, unbatched, oracle), diffs, "vjp/grad")


@pytest.mark.parametrize("config", [CONFIGS[k] for k in SMALL], ids=SMALL)
@pytest.mark.parametrize("jac", [jacfwd, jacrev], ids=["jacfwd", "jacrev"])
def test_jacobians_equal_nn(jac, config, loops, diffs):
    assert_close(*both(lambda f, *args: jac(f, (0, 1, 2))(*args), *pair(**config)), diffs, jac.__name__)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("config", [CONFIGS[k] for k in SMALL], ids=SMALL)
def test_hessian_equals_nn(config, packed, loops, diffs):
    # Wrt the input, hx and every weight: forward mode (our jvp) over reverse mode (our BPTT,
    # differentiated by autograd).
    def fn(f, params, x, hx):
        return hessian(loss_of(f), (0, 1, 2))(params, x, hx)

    def oracle(f, params, x, hx):  # the same blocks, in the same order, from plain autograd
        g = on_tensors(f, list(params))
        args = (x, hx, *params.values())
        blocks = torch.autograd.functional.hessian(lambda *a: sum(o.pow(2).sum() for o in g(*a)), args)
        as_tree = lambda t: (dict(zip(params, t[2:], strict=True)), t[0], t[1])  # noqa: E731
        return as_tree([as_tree(row) for row in blocks])

    assert_close(*both(fn, *pair(**config), packed, oracle=oracle), diffs, "hessian")


def test_forward_ad_dual_tensors_equal_nn(loops, diffs):
    results = []
    for model in pair(num_layers=2, bidirectional=True):
        _, x, hx = inputs(model)
        x_dot, hx_dot = tangents_like(x, hx)
        with fwAD.dual_level():
            output, h_n = model(fwAD.make_dual(x, x_dot), fwAD.make_dual(hx, hx_dot))
            results.append([fwAD.unpack_dual(output).tangent, fwAD.unpack_dual(h_n).tangent])
    assert_close(*results, diffs, "forward_ad")


def test_cell_jvp_and_grad_equal_nn(diffs):
    torch.manual_seed(0)
    theirs = nn.RNNCell(D, H, dtype=F64)
    ours = RNNCell(D, H, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    x, h = torch.randn(2, D, dtype=F64), torch.randn(2, H, dtype=F64)
    results = []
    for model in (ours, theirs):
        params = {k: v.detach() for k, v in model.named_parameters()}
        f = lambda p, x, h, m=model: functional_call(m, p, (x, h))  # noqa: E731
        results.append([jvp(f, (params, x, h), tangents_like(params, x, h)),
                        jacrev(f, (0, 1, 2))(params, x, h)])
    assert_close(*results, diffs, "RNNCell jvp/jacrev")


# --------------------------------------------------------------------------------------------
# vmap: the transform nn.RNN lacks, so the oracle is the loop over the mapped dimension
# --------------------------------------------------------------------------------------------


def test_nn_rnn_packed_input_fails_under_torch_func():
    # Why the packed cases above use torch.autograd.functional for nn.RNN: its kernel reads the
    # batch sizes' data pointer, which torch.func's wrapped tensors do not have.
    _, theirs = pair()
    params, x, hx = inputs(theirs, packed=True)
    with pytest.raises(RuntimeError, match="data pointer"):
        jvp(as_function(theirs, packed=True), (params, x, hx), tangents_like(params, x, hx))


def test_nn_rnn_has_no_batching_rule():
    _, theirs = pair()
    with pytest.raises(RuntimeError, match="Batching rule not implemented"):
        vmap(lambda x: theirs(x)[0])(torch.randn(3, 5, 2, D, dtype=F64))


@pytest.mark.parametrize("in_dims", [(0, None), (1, None), (0, 0), (None, 1)], ids=str)
@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_vmap_equals_the_loop(config, in_dims, loops, diffs):
    ours, _ = pair(**config)
    B = 3
    torch.manual_seed(4)
    x_one = torch.randn(2, 5, D, dtype=F64) if ours.batch_first else torch.randn(5, 2, D, dtype=F64)
    hx_one = torch.randn(ours.num_layers * (1 + ours.bidirectional), 2, H, dtype=F64)
    xs = torch.stack([x_one + i for i in range(B)], in_dims[0]) if in_dims[0] is not None else x_one
    hxs = torch.stack([hx_one * i for i in range(B)], in_dims[1]) if in_dims[1] is not None else hx_one
    got = vmap(ours, in_dims=in_dims)(xs, hxs)
    pick = lambda t, d, i: t if d is None else t.select(d, i)  # noqa: E731
    want = [torch.stack(o) for o in zip(*(ours(pick(xs, in_dims[0], i), pick(hxs, in_dims[1], i))
                                           for i in range(B)), strict=True)]
    assert_close(got, want, diffs, "vmap vs loop")


def test_vmap_of_packed_input_and_of_mapped_weights_equal_the_loop(diffs):
    # Neither folds into the batch (packed rows interleave sequences; per-element weights are
    # different GEMMs): the rule then calls the RNN once per element. Still equal to the loop.
    ours, _ = pair(num_layers=2, bidirectional=True)
    f = as_function(ours, packed=True)
    params, x, hx = inputs(ours, packed=True)
    xs = torch.stack([x, 2 * x, -x])
    assert_close(vmap(f, in_dims=(None, 0, None))(params, xs, hx),
                 [torch.stack(o) for o in zip(*(f(params, x_i, hx) for x_i in xs), strict=True)],
                 diffs, "vmap vs loop")
    ensemble = {k: torch.stack([v, 0.5 * v]) for k, v in params.items()}
    f = as_function(ours)
    params, x, hx = inputs(ours)
    got = vmap(f, in_dims=(0, None, None))(ensemble, x, hx)
    want = [torch.stack(o) for o in zip(*(f({k: v[i] for k, v in ensemble.items()}, x, hx)
                                           for i in range(2)), strict=True)]
    assert_close(got, want, diffs, "vmap vs loop")


def test_nested_vmap_and_vmap_of_grad(loops, diffs):
    ours, theirs = pair(num_layers=2, bidirectional=True)
    torch.manual_seed(5)
    xs = torch.randn(2, 3, 5, 2, D, dtype=F64)
    got = vmap(vmap(lambda x: ours(x)[0]))(xs)
    want = torch.stack([torch.stack([ours(x)[0] for x in row]) for row in xs])
    assert_close(got, want, diffs, "nested vmap vs loop")
    # Per-example gradients: vmap of grad, against nn.RNN's gradients one example at a time.
    results = []
    for model in (ours, theirs):
        params = {k: v.detach() for k, v in model.named_parameters()}
        loss = lambda p, x, m=model: functional_call(m, p, (x,))[0].pow(2).sum()  # noqa: E731
        per_example = vmap(grad(loss), in_dims=(None, 0))(params, xs[0]) if model is ours else \
            [grad(loss)(params, x) for x in xs[0]]
        results.append(per_example if model is theirs else
                       [{k: v[i] for k, v in per_example.items()} for i in range(len(xs[0]))])
    assert_close(*results, diffs, "vmap(grad) vs loop")


# --------------------------------------------------------------------------------------------
# Second derivatives: gradgradcheck, and a gradient penalty against nn.RNN
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,packed",
    [({}, False), ({"nonlinearity": "relu"}, False), ({"bidirectional": True}, False),
     ({"num_layers": 2, "bidirectional": True}, True), ({"num_layers": 2, "nonlinearity": "relu"}, True),
     ({"cell": "gru"}, False), ({"cell": "gru", "num_layers": 2, "bidirectional": True}, True)],
    ids=["tanh", "relu", "bi", "L2-bi-packed", "L2-relu-packed", "gru", "gru-L2-bi-packed"],
)
def test_gradgradcheck(config, packed, loops):
    ours, _ = pair(**config)
    f = as_function(ours, packed)
    params, x, hx = inputs(ours, packed)
    names = list(params)

    def g(x, hx, *weights):
        return f(dict(zip(names, weights, strict=True)), x, hx)

    leaves = [t.clone().requires_grad_() for t in (x, hx, *params.values())]
    assert torch.autograd.gradgradcheck(g, leaves, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_gradient_penalty_equals_nn(config, loops, diffs):
    # L = ‖output‖² + ‖∂‖output‖²/∂x‖² + ‖∂‖output‖²/∂W_hh‖²: its gradients with respect to
    # every leaf need the second derivatives through the RNN.
    results = []
    for model in pair(**config):
        _, x, hx = inputs(model)
        x, hx = x.requires_grad_(), hx.requires_grad_()
        output, h_n = model(x, hx)
        first = output.pow(2).sum() + h_n.pow(2).sum()
        dx, dW_hh = torch.autograd.grad(first, (x, model.weight_hh_l0), create_graph=True)
        penalty = first + dx.pow(2).sum() + dW_hh.pow(2).sum()
        results.append(torch.autograd.grad(penalty, (x, hx, *model.parameters())))
    assert_close(*results, diffs, "gradient penalty")
