"""What PyTorch's own suite checks of nn.RNN and nn.RNNCell (test_nn.py's RNN tests and
test_modules.py's module_db entries), checked of ours in our own words, with nn.RNN as the oracle
(issue 21): errors and their messages, pickling and deepcopy, factory kwargs (dtype, the meta
device, ``to_empty``, ``load_state_dict(assign=True)``), dropout across save/load and changed
between calls, zero-size dimensions, non-contiguous input; and what users do to the module:
parametrizations (weight_norm, spectral_norm, orthogonal) on ``weight_hh_l0``, pruning, hooks,
``torch.func.functional_call``. Double backward and the batched-gradient check are in
test_dropin.py; whole-model torch.save/torch.load in test_dropin_serialization.py.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from helpers import F64, max_abs
from torch import nn
from torch.nn.utils import parametrizations, prune

import scratchrnn

pytestmark = pytest.mark.usefixtures("one_thread")

T, N, D, H = 4, 3, 5, 6
TOL = 1e-12


def pair(**kwargs):
    """(nn.RNN, scratchrnn.RNN) with the same float64 weights."""
    torch.manual_seed(0)
    theirs = nn.RNN(D, H, dtype=F64, **kwargs)
    return theirs, scratchrnn.RNN.from_torch(theirs)


def assert_same_run(theirs, ours, *args, seed=3):
    """Both modules on the same input (and the same dropout draws): outputs and gradients equal."""
    results = []
    for module in (theirs, ours):
        module.zero_grad()
        inputs = [a.detach().clone().requires_grad_() for a in args]
        torch.manual_seed(seed)
        out, h_n = module(*inputs)
        (out.sin().sum() + h_n.cos().sum()).backward()
        results.append((out, h_n, [i.grad for i in inputs], [p.grad for p in module.parameters()]))
    (out_t, h_t, dx_t, dw_t), (out_o, h_o, dx_o, dw_o) = results
    assert max_abs(out_o, out_t) < TOL and max_abs(h_o, h_t) < TOL
    for a, b in zip(dx_o + dw_o, dx_t + dw_t, strict=True):
        assert max_abs(a, b) < TOL


# --------------------------------------------------------------------------------------------
# Errors: the same exception type, and torch's message within ours.
# --------------------------------------------------------------------------------------------

BAD_CALLS = {
    "hx_wrong_batch": lambda c: c.RNN(3, 4, 2)(torch.randn(5, 2, 3), torch.randn(2, 3, 4)),
    "hx_wrong_layers": lambda c: c.RNN(3, 4, 2)(torch.randn(5, 2, 3), torch.randn(1, 2, 4)),
    "input_wrong_features": lambda c: c.RNN(3, 4)(torch.randn(5, 2, 4)),
    "input_4d": lambda c: c.RNN(3, 4)(torch.randn(5, 2, 3, 1)),
    "hx_2d_for_3d_input": lambda c: c.RNN(3, 4)(torch.randn(5, 2, 3), torch.randn(1, 4)),
    "hx_3d_for_2d_input": lambda c: c.RNN(3, 4)(torch.randn(5, 3), torch.randn(1, 1, 4)),
    "empty_sequence": lambda c: c.RNN(3, 4)(torch.randn(0, 2, 3)),
    "input_dtype": lambda c: c.RNN(3, 4)(torch.randn(5, 2, 3, dtype=F64)),
    "nonlinearity": lambda c: c.RNN(3, 4, nonlinearity="swish"),  # gelu is one of ours (issue 19)
    "dropout_above_1": lambda c: c.RNN(3, 4, dropout=2),
    "dropout_bool": lambda c: c.RNN(3, 4, dropout=True),
    "hidden_size_0": lambda c: c.RNN(3, 0),
    "input_size_0": lambda c: c.RNN(0, 4),
    "num_layers_0": lambda c: c.RNN(3, 4, 0),
    "hidden_size_float": lambda c: c.RNN(3, 4.0),
    "proj_size": lambda c: c.RNN(3, 4, proj_size=2),
    "cell_input_3d": lambda c: c.RNNCell(3, 4)(torch.randn(2, 3, 1)),
    "cell_hidden_4d": lambda c: c.RNNCell(3, 4)(torch.randn(2, 3), torch.randn(2, 1, 1, 4)),
}


def _raised(call, namespace) -> BaseException:
    with pytest.raises(Exception) as info:
        call(namespace)
    return info.value


@pytest.mark.parametrize("case", BAD_CALLS)
def test_errors_like_nn_rnn(case):
    theirs, ours = _raised(BAD_CALLS[case], nn), _raised(BAD_CALLS[case], scratchrnn)
    assert type(ours) is type(theirs)
    # torch's words, up to what ours offers besides (more nonlinearities, issue 19)
    assert str(theirs).split(". Convert")[0].split(". Select from")[0] in str(ours)


def test_dropout_warning_like_nn_rnn():
    for namespace in (nn, scratchrnn):
        with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
            namespace.RNN(3, 4, dropout=0.5)


# --------------------------------------------------------------------------------------------
# Copies: pickle, deepcopy, and the dropout setting and mode carried through a save.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("copier", ["pickle", "deepcopy", "torch_save"])
def test_copies_compute_the_same(copier):
    _, ours = pair(num_layers=2, dropout=0.4, bidirectional=True)
    if copier == "pickle":
        copied = pickle.loads(pickle.dumps(ours))
    elif copier == "deepcopy":
        copied = copy.deepcopy(ours)
    else:
        buffer = io.BytesIO()
        torch.save(ours, buffer)
        buffer.seek(0)
        copied = torch.load(buffer)  # weights_only=True: our classes are allow-listed
    assert type(copied) is type(ours) and copied.dropout == 0.4 and copied.training
    assert all(p is not q for p, q in zip(copied.parameters(), ours.parameters(), strict=True))
    assert_same_run(ours, copied, torch.randn(T, N, D, dtype=F64))  # the same dropout masks


def test_dropout_changed_between_calls_like_nn_rnn():
    theirs, ours = pair(num_layers=3, dropout=0.2)
    x = torch.randn(T, N, D, dtype=F64)
    assert_same_run(theirs, ours, x)
    theirs.dropout = ours.dropout = 0.7
    assert_same_run(theirs, ours, x)
    theirs.dropout = ours.dropout = 0.0
    assert_same_run(theirs, ours, x)
    theirs.eval(), ours.eval()
    theirs.dropout = ours.dropout = 0.9  # eval: no dropout whatever the setting
    assert_same_run(theirs, ours, x)


# --------------------------------------------------------------------------------------------
# Factory kwargs: dtype, meta device, to_empty, load_state_dict(assign=True).
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ["RNN", "RNNCell"])
def test_factory_kwargs(cls):
    ours = getattr(scratchrnn, cls)(D, H, dtype=F64)
    assert all(p.dtype == F64 and p.device.type == "cpu" for p in ours.parameters())
    meta = getattr(scratchrnn, cls)(D, H, device="meta")
    assert all(p.is_meta for p in meta.parameters())


def test_meta_device_forward_gives_shapes_like_nn_rnn():
    kwargs = {"num_layers": 2, "bidirectional": True, "batch_first": True}
    outputs = [m(D, H, device="meta", **kwargs)(torch.empty(N, T, D, device="meta"))
               for m in (nn.RNN, scratchrnn.RNN)]
    assert [(o.shape, o.is_meta) for o in outputs[1]] == [(o.shape, o.is_meta) for o in outputs[0]]


def test_to_empty_then_reset_parameters_draws_like_nn_rnn():
    modules = [m(D, H, 2, device="meta").to_empty(device="cpu") for m in (nn.RNN, scratchrnn.RNN)]
    for m in modules:
        torch.manual_seed(5)
        m.reset_parameters()
    for p, q in zip(*(m.parameters() for m in modules), strict=True):
        assert torch.equal(p, q)


def test_load_state_dict_assign_into_meta_module():
    theirs, _ = pair(num_layers=2)
    ours = scratchrnn.RNN(D, H, 2, device="meta")
    ours.load_state_dict(theirs.state_dict(), assign=True)
    assert all(p.dtype == F64 and not p.is_meta for p in ours.parameters())
    assert_same_run(theirs, ours, torch.randn(T, N, D, dtype=F64))


# --------------------------------------------------------------------------------------------
# Shapes: zero-size dimensions, non-contiguous input.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}], ids=["L1", "L2-bi"])
def test_empty_batch_like_nn_rnn(kwargs):
    theirs, ours = pair(**kwargs)
    assert_same_run(theirs, ours, torch.randn(T, 0, D, dtype=F64))


def test_cell_empty_batch_like_nn_rnn_cell():
    torch.manual_seed(0)
    theirs = nn.RNNCell(D, H, dtype=F64)
    ours = scratchrnn.RNNCell.from_torch(theirs)
    x = torch.randn(0, D, dtype=F64, requires_grad=True)
    assert ours(x).shape == theirs(x).shape == (0, H)
    ours(x).sum().backward()
    assert x.grad.shape == (0, D)


def test_non_contiguous_input_and_hx():
    theirs, ours = pair(num_layers=2)
    x = torch.randn(N, T, 2 * D, dtype=F64)[:, :, ::2].transpose(0, 1)  # (T, N, D), strided
    hx = torch.randn(N, 2, H, dtype=F64).transpose(0, 1)
    assert not x.is_contiguous() and not hx.is_contiguous()
    assert_same_run(theirs, ours, x, hx)


# --------------------------------------------------------------------------------------------
# What users do to the module.
# --------------------------------------------------------------------------------------------

PARAMETRIZATIONS = {
    "weight_norm": lambda m: parametrizations.weight_norm(m, "weight_hh_l0"),
    "spectral_norm": lambda m: parametrizations.spectral_norm(m, "weight_hh_l0"),
    "orthogonal": lambda m: parametrizations.orthogonal(m, "weight_hh_l0"),
}


@pytest.mark.parametrize("name", PARAMETRIZATIONS)
def test_parametrization_on_weight_hh_like_nn_rnn(name):
    theirs, ours = pair(num_layers=2)
    for m in (theirs, ours):
        torch.manual_seed(7)  # spectral_norm draws its power-iteration vectors
        PARAMETRIZATIONS[name](m)
    theirs.eval(), ours.eval()  # spectral_norm: no power iteration in eval, the same σ twice
    assert_same_run(theirs, ours, torch.randn(T, N, D, dtype=F64))
    originals = [p for n, p in ours.named_parameters() if "parametrizations" in n]
    assert originals and all(p.grad is not None for p in originals)


def test_pruning_weight_hh_like_nn_rnn():
    theirs, ours = pair(num_layers=2)
    for m in (theirs, ours):
        prune.l1_unstructured(m, "weight_hh_l0", amount=0.4)
    assert torch.equal(ours.weight_hh_l0, theirs.weight_hh_l0)
    assert_same_run(theirs, ours, torch.randn(T, N, D, dtype=F64))
    assert (ours.weight_hh_l0_orig.grad[ours.weight_hh_l0_mask == 0] == 0).all()
    prune.remove(ours, "weight_hh_l0")
    assert (ours.weight_hh_l0 == 0).sum() == (theirs.weight_hh_l0 == 0).sum()


def test_hooks_like_nn_rnn():
    theirs, ours = pair(num_layers=2)
    seen = {}
    for key, m in (("theirs", theirs), ("ours", ours)):
        log = seen[key] = []
        m.register_forward_pre_hook(lambda mod, args, log=log: log.append(("pre", args[0].shape)))
        m.register_forward_hook(lambda mod, args, out, log=log: log.append(("fwd", out[0].shape)))
        m.register_full_backward_pre_hook(lambda mod, g, log=log: log.append(("bwd_pre", g[0].shape)))
        m.register_full_backward_hook(lambda mod, gi, go, log=log: log.append(("bwd", gi[0].shape)))
    assert_same_run(theirs, ours, torch.randn(T, N, D, dtype=F64))
    assert seen["ours"] == seen["theirs"] and len(seen["ours"]) == 4


def test_functional_call_like_nn_rnn():
    theirs, ours = pair(num_layers=2, bidirectional=True)
    params = {n: torch.randn_like(p) for n, p in theirs.named_parameters()}
    x = torch.randn(T, N, D, dtype=F64)
    got = torch.func.functional_call(ours, params, (x,))
    want = torch.func.functional_call(theirs, params, (x,))
    assert all(max_abs(g, w) < TOL for g, w in zip(got, want, strict=True))
    grads = torch.func.grad(lambda p: torch.func.functional_call(ours, p, (x,))[0].sum())(params)
    grads_t = torch.func.grad(lambda p: torch.func.functional_call(theirs, p, (x,))[0].sum())(params)
    assert all(max_abs(grads[n], grads_t[n]) < TOL for n in params)


def test_torch_compile_fullgraph_of_a_model_holding_ours():
    # Dynamo refuses to wrap any instance of nn.RNN / nn.GRU / nn.LSTM (torch/_dynamo/variables/
    # builder.py, "Attempted to wrap RNN, GRU, or LSTM", unless config.allow_rnn): a guard for
    # the subclassing decision (issue 21: nn.RNNBase, not nn.RNN), and that the library leaves
    # allow_rnn as torch sets it.
    _, ours = pair(num_layers=2)
    model = nn.Sequential(ours)
    x = torch.randn(T, N, D, dtype=F64)
    got = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    assert all(max_abs(g, w) < TOL for g, w in zip(got, model(x), strict=True))
    assert torch._dynamo.config.allow_rnn is False
