"""The cell options in the C loop (cells/options.c): layer norm and zoneout on the Elman cell, and
every built-in nonlinearity (the ones other than tanh and relu with or without options), against
the PyTorch loop of the same cell (the reference of test_options.py); its own erf and f, f'.

The C loop must really run where ``accel_ready`` says so (a test fails if the options cell falls
back to the PyTorch loop silently), agree with the PyTorch loop to 1e-12 in float64 and to float32
rounding, over layers, bidirectional (the reverse direction), packed, batch_first, no bias, eval
and RNNCell; propagate NaN and ±inf as the PyTorch loop does; and refuse bad buffers at the door
and in C.
"""

from __future__ import annotations

import ctypes
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import scratchrnn
from scratchrnn.core import accel, cells

needs_accel = pytest.mark.skipif(not accel.available(), reason="no C compiler or BLAS here")
pytestmark = [needs_accel, pytest.mark.usefixtures("one_thread")]

D, H = 3, 6
C_OPTIONS = [{"layer_norm": True}, {"zoneout": 0.3}, {"layer_norm": True, "zoneout": 0.3},
             {"layer_norm": True, "nonlinearity": "relu"}, {"zoneout": 0.3, "nonlinearity": "relu"},
             {"layer_norm": True, "zoneout": 0.3, "nonlinearity": "relu"},
             {"layer_norm": True, "weight_drop": 0.4}]
OTHERS = ["sigmoid", "softsign", "leaky_relu", "silu", "gelu"]  # the built-ins beside tanh and relu
ACT_OPTIONS = [{"nonlinearity": f, **o} for f in OTHERS
               for o in ({}, {"layer_norm": True}, {"zoneout": 0.3}, {"layer_norm": True, "zoneout": 0.3})]
C_OPTIONS += ACT_OPTIONS
CASES = {  # module kwargs, lengths (packed) or None
    "L1": ({}, None),
    "L2-bi-dropout": ({"num_layers": 2, "bidirectional": True, "dropout": 0.3}, None),
    "packed-L2-bi": ({"num_layers": 2, "bidirectional": True}, [7, 5, 5, 2, 1]),
    "packed-L1": ({}, [7, 5, 5, 2, 1]),
    "batch_first-nobias": ({"batch_first": True, "bias": False}, None),
}


def _id(options: dict) -> str:
    return "+".join(f"{k}={v}" for k, v in options.items())


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of the options' C entry points (through accel, as the cell makes them)."""
    counts = {"forward": 0, "backward": 0}
    forward, backward = accel.options_forward_steps, accel.options_backward_steps

    def counted_forward(*args, **kwargs):
        counts["forward"] += 1
        return forward(*args, **kwargs)

    def counted_backward(*args, **kwargs):
        counts["backward"] += 1
        return backward(*args, **kwargs)

    monkeypatch.setattr(accel, "options_forward_steps", counted_forward)
    monkeypatch.setattr(accel, "options_backward_steps", counted_backward)
    return counts


def _model(options, case, dtype, training=True):
    torch.manual_seed(0)
    m = scratchrnn.RNN(D, H, dtype=dtype, **case, **options)
    with torch.no_grad():  # γ and β away from 1 and 0, so that the comparison sees them
        for name in m._ln_names:
            getattr(m, name).uniform_(0.5, 1.5)
    return m.train(training)


def _run(m, lengths, dtype, poison=None):
    """Output rows, h_n and the gradients of x, hx and every parameter, for a fixed upstream."""
    gen = torch.Generator().manual_seed(1)
    T, N = 7, 5
    dirs = 2 if m.bidirectional else 1
    x = torch.randn(T, N, D, generator=gen, dtype=dtype)
    hx = torch.randn(m.num_layers * dirs, N, H, generator=gen, dtype=dtype)
    if poison is not None:
        x[2, 1, 0] = poison
    x.requires_grad_()
    hx.requires_grad_()
    inp = pack_padded_sequence(x, lengths) if lengths else x.transpose(0, 1) if m.batch_first else x
    torch.manual_seed(7)  # the masks
    output, h_n = m(inp, hx)
    data = output.data if isinstance(output, PackedSequence) else output
    up = [torch.randn(t.shape, generator=gen, dtype=dtype) for t in (data, h_n)]
    loss = (data * up[0]).sum() + (h_n * up[1]).sum()
    return [data, h_n, *torch.autograd.grad(loss, [x, hx, *m.parameters()])]


def _both_loops(options, case, dtype, training=True, poison=None):
    results = []
    for enabled in (True, False):
        accel.set_enabled(enabled)
        try:
            results.append(_run(_model(options, case[0], dtype, training), case[1], dtype, poison))
        finally:
            accel.set_enabled(True)
    return results


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item() if b.numel() else 0.0


@pytest.mark.parametrize("options", [*C_OPTIONS, {"layer_norm": True, "recurrent_dropout": 0.3}], ids=_id)
def test_the_enabled_loop_is_the_c_loop_for_layer_norm_and_zoneout(options, calls):
    """The options cell must not fall back to the PyTorch loop silently where C can run it:
    accel_ready is true, and each layer and direction calls the C entry points once each way."""
    m = _model(options, {"num_layers": 2, "bidirectional": True}, torch.float32)
    cell = cells.get(m.cell_name)
    out, h_n = m(torch.randn(4, 2, D))
    (out.sum() + h_n.sum()).backward()
    expected = 0 if options.get("recurrent_dropout") else 4  # 2 layers × 2 directions
    assert calls == {"forward": expected, "backward": expected}
    assert cell.accel_ready(out, h_n) == (expected > 0)


def test_eval_and_the_disabled_loop_and_other_cases(calls):
    """Eval (zoneout's expectation) runs C too; SCRATCHRNN_ACCEL off, float16, another nonlinearity
    or recurrent dropout in training run the PyTorch loop."""
    m = _model({"layer_norm": True, "zoneout": 0.2}, {}, torch.float32, training=False)
    m(torch.randn(3, 2, D))
    assert calls["forward"] == 1
    accel.set_enabled(False)
    try:
        m(torch.randn(3, 2, D))
    finally:
        accel.set_enabled(True)
    own = scratchrnn.Activation(torch.sin, torch.cos, name="sin_of_test_options_accel")  # a name of its own
    for options in ({"layer_norm": True, "nonlinearity": own}, {"nonlinearity": own}, {}):  # {}: elman.c
        _model(options, {}, torch.float32)(torch.randn(3, 2, D))
    _model({"layer_norm": True}, {}, torch.bfloat16)(torch.randn(3, 2, D, dtype=torch.bfloat16))
    assert calls["forward"] == 1
    rd = _model({"layer_norm": True, "recurrent_dropout": 0.3}, {}, torch.float32, training=False)
    rd(torch.randn(3, 2, D))  # eval: no recurrent mask, so the C loop runs
    assert calls["forward"] == 2


@pytest.mark.parametrize("case_name", CASES)
@pytest.mark.parametrize("options", C_OPTIONS, ids=_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_c_loop_equals_the_pytorch_loop(options, case_name, dtype, calls):
    ours, ref = _both_loops(options, CASES[case_name], dtype)
    assert calls["forward"] > 0 and calls["backward"] > 0
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        assert _rel(a, b) <= tol, (i, _rel(a, b))


@pytest.mark.parametrize("options", C_OPTIONS[:3], ids=_id)
def test_c_loop_equals_the_pytorch_loop_in_eval(options, calls):
    ours, ref = _both_loops(options, CASES["packed-L2-bi"], torch.float64, training=False)
    assert calls["forward"] > 0
    for a, b in zip(ours, ref, strict=True):
        assert _rel(a, b) <= 1e-12


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("options", C_OPTIONS[:4] + [o for o in ACT_OPTIONS if len(o) < 3], ids=_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_nan_and_inf_propagate_as_in_the_pytorch_loop(options, value, dtype, calls):
    """One NaN or inf in the input: NaN and ±inf in the same places in every result, the same
    values elsewhere."""
    ours, ref = _both_loops(options, CASES["packed-L2-bi"], dtype, poison=value)
    assert calls["forward"] > 0
    tol = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    assert any(not torch.isfinite(r).all() for r in ref)  # the poison reached the results
    for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
        for pattern in (torch.isnan, torch.isposinf, torch.isneginf):
            assert torch.equal(pattern(a), pattern(b)), i
        finite = torch.isfinite(b)
        torch.testing.assert_close(a[finite], b[finite], **tol)


@pytest.mark.parametrize("options", [{"layer_norm": True}, {"zoneout": 0.3},
                                     {"layer_norm": True, "zoneout": 0.3, "nonlinearity": "relu"},
                                     {"nonlinearity": "gelu"}, {"zoneout": 0.3, "nonlinearity": "silu"}],
                         ids=_id)
def test_rnncell_with_options_runs_c_and_equals_the_pytorch_loop(options, calls):
    results = []
    for enabled in (True, False):
        accel.set_enabled(enabled)
        try:
            torch.manual_seed(0)
            cell = scratchrnn.RNNCell(D, H, dtype=torch.float64, **options)
            x = torch.randn(4, D, dtype=torch.float64, requires_grad=True)
            h = torch.randn(4, H, dtype=torch.float64, requires_grad=True)
            torch.manual_seed(7)
            out = cell(x, h)
            results.append([out, *torch.autograd.grad((out * out).sum(), [x, h, *cell.parameters()])])
        finally:
            accel.set_enabled(True)
    assert calls["forward"] == 1 and calls["backward"] == 1
    for a, b in zip(*results, strict=True):
        assert _rel(a, b) <= 1e-12


# ----- the door and the C checks --------------------------------------------------------------


def _buffers(dtype=torch.float64, T=3, N=2):
    rows = T * N
    return {"out": torch.randn(rows, H, dtype=dtype), "h0": torch.randn(N, H, dtype=dtype),
            "W_hh": torch.randn(H, H, dtype=dtype), "gamma": torch.ones(H, dtype=dtype),
            "beta": torch.zeros(H, dtype=dtype), "z": torch.rand(rows, H, dtype=dtype),
            "h_n": torch.empty(N, H, dtype=dtype), "sizes": [N] * T}


def test_the_door_refuses_what_the_c_loop_cannot_read():
    b = _buffers()

    def forward(**changes):
        a = b | changes
        accel.options_forward_steps(a["out"], a["h0"], a["W_hh"], None, a["gamma"], a["beta"], a["z"],
                                    a["sizes"], a["h_n"], False, False)

    forward()  # the buffers as they should be
    with pytest.raises(RuntimeError, match="gamma and beta together"):
        forward(beta=None)
    with pytest.raises(RuntimeError, match=r"ln_weight of shape \[6\], got \[5\]"):
        forward(gamma=torch.ones(H - 1, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"zoneout mask of shape \[6, 6\], got \[5, 6\]"):
        forward(z=b["z"][:-1])
    with pytest.raises(RuntimeError, match="zoneout mask contiguous"):
        forward(z=torch.rand(H, 6, dtype=torch.float64).t())
    with pytest.raises(RuntimeError, match=r"dtype torch\.float64, got torch\.float32"):
        forward(z=b["z"].float())
    with pytest.raises(ValueError, match=r"nonlinearities are .* got 'sin'"):
        accel.options_forward_steps(b["out"], b["h0"], b["W_hh"], None, None, None, None, b["sizes"],
                                    b["h_n"], "sin", False)
    F64 = torch.float64
    dh, a, dh0 = torch.randn(6, H, dtype=F64), torch.randn(6, H, dtype=F64), torch.empty(2, H, dtype=F64)
    dextra = torch.empty(6, 2 * H, dtype=F64)

    def backward(**changes):
        c = {"a": a, "gamma": b["gamma"], "beta": b["beta"], "z": b["z"], "dextra": dextra} | changes
        accel.options_backward_steps(dh.clone(), b["out"], b["W_hh"], c["a"], c["gamma"], c["beta"], c["z"],
                                     c["dextra"], b["sizes"], dh0, False, False)

    backward()
    with pytest.raises(RuntimeError, match="gamma, beta and dextra together"):
        backward(dextra=None)
    with pytest.raises(RuntimeError, match=r"dextra of shape \[6, 12\], got \[6, 6\]"):
        backward(dextra=torch.empty(6, H, dtype=F64))
    with pytest.raises(RuntimeError, match=r"a of shape \[6, 6\], got \[5, 6\]"):
        backward(a=a[:-1])
    with pytest.raises(RuntimeError, match=r"dtype torch\.float64, got torch\.float32"):
        backward(a=a.float())


def test_the_c_entry_points_refuse_inconsistent_sizes():
    """Called directly (past the door), the C side checks each length and the residuals' width."""
    lib = accel._library()
    b = _buffers()
    sizes, offsets, _, rows = accel._steps(b["sizes"])
    buf = accel._buf
    args = (3, sizes.data_ptr(), offsets.data_ptr(), H, *buf(b["out"]), H, *buf(b["h0"]), *buf(b["W_hh"]),
            None, 0)
    fwd = lib.scratchrnn_options_forward_f64
    ok = fwd(*args, *buf(b["gamma"]), *buf(b["beta"]), *buf(b["z"]), *buf(b["h_n"]), 0, 0)
    assert ok == 0
    assert fwd(*args, *buf(b["gamma"]), None, 0, *buf(b["z"]), *buf(b["h_n"]), 0, 0) == 2  # γ without β
    assert fwd(*args, b["gamma"].data_ptr(), H - 1, *buf(b["beta"]), *buf(b["z"]), *buf(b["h_n"]), 0, 0) == 2
    assert fwd(*args, *buf(b["gamma"]), *buf(b["beta"]), b["z"].data_ptr(), rows * H - 1, *buf(b["h_n"]),
               0, 0) == 2
    F64 = torch.float64
    dh, a = torch.randn(rows, H, dtype=F64), torch.randn(rows, H, dtype=F64)
    dh0, dextra = torch.empty(2, H, dtype=F64), torch.empty(rows, 2 * H, dtype=F64)
    bwd = lib.scratchrnn_options_backward_f64
    head = (3, sizes.data_ptr(), offsets.data_ptr(), H, *buf(dh), *buf(b["out"]), H, *buf(b["W_hh"]))
    ln = (*buf(b["gamma"]), *buf(b["beta"]))
    assert bwd(*head, *buf(a), *ln, *buf(b["z"]), *buf(dextra), *buf(dh0), 0, 0) == 0
    assert bwd(*head, *buf(a), *ln, *buf(b["z"]), None, 0, *buf(dh0), 0, 0) == 2  # γ, β without dextra
    assert bwd(*head, *buf(a), *ln, *buf(b["z"]), dextra.data_ptr(), rows * 2 * H - 1, *buf(dh0), 0, 0) == 2
    assert bwd(*head, a.data_ptr(), rows * H - 1, *ln, *buf(b["z"]), *buf(dextra), *buf(dh0), 0, 0) == 2
    assert bwd(*head, *buf(a), *ln, *buf(b["z"]), *buf(dextra), dh0.data_ptr(), 2 * H - 1, 0, 0) == 2
    assert fwd(*args, *buf(b["gamma"]), *buf(b["beta"]), *buf(b["z"]), *buf(b["h_n"]), 0, 7) == 4  # no act 7
    assert bwd(*head, *buf(a), *ln, *buf(b["z"]), *buf(dextra), *buf(dh0), 0, -1) == 4
    shifted = offsets + 1  # offsets that are not the running sum (kept alive while C reads it)
    bad_steps = (3, sizes.data_ptr(), shifted.data_ptr(), H)
    assert bwd(*bad_steps, *head[4:], *buf(a), *ln, *buf(b["z"]), *buf(dextra), *buf(dh0), 0, 0) == 1


# ----- the nonlinearities' own math (erf, f and f') ------------------------------------------


def _grid(dtype):
    big = 1e300 if dtype == torch.float64 else 1e30
    grid = torch.cat([
        torch.linspace(-12, 12, 200_001, dtype=torch.float64),
        torch.logspace(-30, 3, 20_001, dtype=torch.float64),
        -torch.logspace(-30, 3, 20_001, dtype=torch.float64),
        torch.tensor([0.0, -0.0, 1e-300, 5e-324, 2.4999999999999996, 2.5, 5.9, 6.0, 27.0, 1e10],
                     dtype=torch.float64),
    ]).to(dtype)
    return torch.cat([grid, torch.tensor([big, -big, math.nan, math.inf, -math.inf], dtype=dtype)])


def _array(name, x, *flags):
    y = x.clone()
    getattr(accel._library(), f"scratchrnn_{name}_{accel._suffix(x)}")(
        ctypes.c_int64(y.numel()), ctypes.c_void_p(y.data_ptr()), *map(ctypes.c_int, flags))
    return y


def _same_specials(ours, ref):
    for pattern in (torch.isnan, torch.isposinf, torch.isneginf):
        assert torch.equal(pattern(ours), pattern(ref))


def test_erf_against_torch():
    """erf_d (cells/options.c) within 1e-15 relative of torch.erf over a wide range (the
    series/continued-fraction split at |x| = 2.5 included), ±1 for large |x| and ±inf, NaN for NaN,
    ±0 for ±0."""
    x = _grid(torch.float64)
    ours, ref = _array("erf", x), torch.erf(x)
    _same_specials(ours, ref)
    finite = torch.isfinite(ref)
    rel = ((ours - ref).abs() / ref.abs().clamp_min(1e-300))[finite & (ref != 0)]
    assert rel.max() <= 1e-15, (rel.max(), x[finite & (ref != 0)][rel.argmax()])
    assert torch.equal(ours[ref == 0].signbit(), ref[ref == 0].signbit())
    assert ours[x.abs() >= 6].abs().eq(1).all()
    x32 = _grid(torch.float32)  # erf_f, float32's own: a few ulp from the correctly rounded erf
    ours32, ref32 = _array("erf", x32), torch.erf(x32.double())
    _same_specials(ours32, ref32)
    torch.testing.assert_close(ours32.double(), ref32, rtol=4e-7, atol=1e-37, equal_nan=True)
    assert ours32[x32.abs() >= 4].abs().eq(1).all()


_TORCH_F = {"sigmoid": torch.sigmoid, "softsign": F.softsign, "leaky_relu": F.leaky_relu, "silu": F.silu,
            "gelu": F.gelu, "tanh": torch.tanh, "relu": torch.relu}


@pytest.mark.parametrize("name", [*OTHERS, "tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_f_and_fprime_as_the_pytorch_loop(name, dtype):
    """f and f' of each nonlinearity code against what the PyTorch loop computes (activations.py):
    f against torch's function, f' against the built-in's fprime; NaN and ±inf in the same places."""
    from scratchrnn.core.cells.activations import BUILT_IN

    x = _grid(dtype)
    code = accel.ACTIVATIONS.index(name)
    # an absolute floor: 1 − h, h(1 − h), 1 + erf, Φ + xφ cancel (in torch as here) where they near 0
    tol = {"rtol": 1e-14, "atol": 1e-14} if dtype == torch.float64 else {"rtol": 4e-7, "atol": 4e-6}
    f, ref_f = _array("activation", x, code, 0), _TORCH_F[name](x)
    _same_specials(f, ref_f)
    torch.testing.assert_close(f[ref_f.isfinite()], ref_f[ref_f.isfinite()], **tol)
    act = BUILT_IN[name]
    if name == "relu":  # relu's f' is a selection in the PyTorch loop (elman.times_fprime), not at NaN
        x = x[~x.isnan()]
        ref_f = torch.relu(x)
    ref_fp = act.fprime(lambda: x, ref_f).to(dtype)
    fp = _array("activation", x, code, 1)
    _same_specials(fp, ref_fp)
    torch.testing.assert_close(fp[ref_fp.isfinite()], ref_fp[ref_fp.isfinite()], **tol)
