"""The optional C loops (_steps.c) against the PyTorch loops and torch.nn.RNN, and their fallback."""

import ctypes
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence

import scratchrnn
from scratchrnn.core import accel

needs_accel = pytest.mark.skipif(not accel.available(), reason="no C compiler or BLAS here")


@pytest.fixture
def python_loops():
    """Run a test with the C loops off, then restore them."""
    accel.set_enabled(False)
    yield
    accel.set_enabled(True)


def _run(model, x, leaves, hx, upstream_seed=1):
    """Output, h_n and the gradients of the leaves, hx and every parameter (random upstream)."""
    output, h_n = model(x, hx)
    data = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    g = torch.Generator().manual_seed(upstream_seed)
    loss = (data * torch.randn(data.shape, generator=g, dtype=data.dtype)).sum()
    loss = loss + (h_n * torch.randn(h_n.shape, generator=g, dtype=h_n.dtype)).sum()
    grads = torch.autograd.grad(loss, [*leaves, hx, *model.parameters()])
    return [data, h_n, *grads]


def _both_paths(make_model, make_inputs):
    results = []
    for enabled in (True, False):
        accel.set_enabled(enabled)
        try:
            torch.manual_seed(0)
            model = make_model()
            results.append(_run(model, *make_inputs()))
        finally:
            accel.set_enabled(True)
    return results


@needs_accel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_c_loops_match_pytorch_loops_and_nn_rnn(dtype, nonlinearity, bidirectional, packed):
    dirs, L, D, H = (2 if bidirectional else 1), 2, 3, 6
    lengths = [7, 5, 5, 2, 1, 1]

    def make_model():
        return scratchrnn.RNN(D, H, L, nonlinearity=nonlinearity, bidirectional=bidirectional,
                              dtype=dtype)

    def make_inputs():
        g = torch.Generator().manual_seed(2)
        hx = torch.randn(L * dirs, len(lengths), H, generator=g, dtype=dtype, requires_grad=True)
        if packed:
            seqs = [torch.randn(n, D, generator=g, dtype=dtype, requires_grad=True) for n in lengths]
            return pack_sequence(seqs, enforce_sorted=False), seqs, hx
        x = torch.randn(7, len(lengths), D, generator=g, dtype=dtype, requires_grad=True)
        return x, [x], hx

    with_c, with_python = _both_paths(make_model, make_inputs)
    torch.manual_seed(0)
    model = make_model()
    oracle = torch.nn.RNN(D, H, L, nonlinearity=nonlinearity, bidirectional=bidirectional, dtype=dtype)
    oracle.load_state_dict(model.state_dict())
    expected = _run(oracle, *make_inputs())
    tol = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    for a, b, c in zip(with_c, with_python, expected, strict=True):
        torch.testing.assert_close(a, c, **tol)
        torch.testing.assert_close(b, c, **tol)


@needs_accel
def test_c_tanh_is_within_one_ulp_in_float32_and_close_in_float64():
    lib = accel._library()
    grid = torch.cat([
        torch.linspace(-25, 25, 400_001, dtype=torch.float64),
        torch.logspace(-30, 1.4, 100_001, dtype=torch.float64),
        -torch.logspace(-30, 1.4, 100_001, dtype=torch.float64),
        torch.tensor([0.0, -0.0, 1e-300, 5e-324, 1e300, -1e300], dtype=torch.float64),
    ])
    x32 = grid.float()
    exact = torch.tanh(x32.double())
    ours32 = x32.clone()
    lib.scratchrnn_tanh_f32(ctypes.c_int64(ours32.numel()), ctypes.c_void_p(ours32.data_ptr()))
    rounded = exact.float()  # the correctly rounded tanh
    floats_apart = (ours32.view(torch.int32).long() - rounded.view(torch.int32).long()).abs()
    assert floats_apart.max() <= 1  # at most the next float over, as torch.tanh
    assert (floats_apart == 0).double().mean() >= 0.99  # and nearly always the correctly rounded one
    ours64 = grid.clone()
    lib.scratchrnn_tanh_f64(ctypes.c_int64(ours64.numel()), ctypes.c_void_p(ours64.data_ptr()))
    torch.testing.assert_close(ours64, torch.tanh(grid), atol=1e-300, rtol=1e-15)
    zeros = grid == 0
    for ours, x in ((ours32, x32), (ours64, grid)):  # tanh(±0) = ±0, as torch.tanh (it once gave −0 for +0)
        assert ours[zeros].eq(0).all() and torch.equal(ours[zeros].signbit(), x[zeros].signbit())
    special = torch.tensor([float("nan"), float("inf"), float("-inf")], dtype=torch.float64)
    for dtype, fn in ((torch.float32, lib.scratchrnn_tanh_f32), (torch.float64, lib.scratchrnn_tanh_f64)):
        ours = special.to(dtype, copy=True)
        fn(ctypes.c_int64(3), ctypes.c_void_p(ours.data_ptr()))
        torch.testing.assert_close(ours, torch.tanh(special.to(dtype)), equal_nan=True, atol=0, rtol=0)


def test_disabled_means_unavailable(python_loops):
    assert not accel.available()
    assert not accel.available_for(torch.zeros(2))


def test_no_compiler_falls_back_to_pytorch(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    accel.set_enabled(True)  # clears the cached library: the next use tries to build again
    try:
        assert not accel.available()
        rnn = scratchrnn.RNN(3, 4)
        output, _ = rnn(torch.randn(5, 2, 3))
        assert output.shape == (5, 2, 4)
    finally:
        monkeypatch.undo()
        accel.set_enabled(True)


def test_only_cpu_float32_and_float64_use_the_c_loops():
    assert not accel.available_for(torch.zeros(2, dtype=torch.bfloat16))
    assert not accel.available_for(torch.zeros(2), torch.zeros(2, dtype=torch.float64))
    if accel.available():
        assert accel.available_for(torch.zeros(2), torch.zeros(3))


needs_onednn = pytest.mark.skipif(accel._onednn_linear() is None, reason="PyTorch built without oneDNN")


@needs_onednn
def test_large_float32_gemms_go_to_onednn_and_agree_with_mkl(monkeypatch):
    calls = []
    real = accel._onednn_linear()
    monkeypatch.setattr(accel, "_onednn_linear", lambda: lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(640, 96, generator=g), torch.randn(96, 128, generator=g)
    torch.testing.assert_close(accel.matmul(A, B), A @ B, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(accel.matmul(A, B.t().contiguous().t()), A @ B, rtol=1e-5, atol=1e-5)
    assert len(calls) == 2
    accel.matmul(A[:8], B)  # small: stays with torch.mm
    accel.matmul(A.double(), B.double())  # float64: stays with torch.mm
    accel.matmul(A.t().contiguous().t(), B)  # A not row-major: stays with torch.mm
    wide = torch.randn(96, 256, generator=g)
    torch.testing.assert_close(accel.matmul(A, wide[:, :128]), A @ wide[:, :128])  # strided B: mm
    assert len(calls) == 2


@needs_onednn
def test_rnn_with_onednn_gemms_matches_nn_rnn_in_float32():
    T, N, D, H = 16, 64, 96, 128  # every once-per-layer GEMM is above the oneDNN threshold
    assert min(T * N * D * H, H * T * N * H) >= accel._ONEDNN_MIN_MACS
    torch.manual_seed(0)
    ours = scratchrnn.RNN(D, H, num_layers=2, bidirectional=True)
    oracle = torch.nn.RNN(D, H, num_layers=2, bidirectional=True)
    oracle.load_state_dict(ours.state_dict())
    x = torch.randn(T, N, D, requires_grad=True)
    results = []
    for model in (ours, oracle):
        output, h_n = model(x)
        loss = output.square().sum() + h_n.sum()
        results.append([output, h_n, *torch.autograd.grad(loss, [x, *model.parameters()])])
    for a, b in zip(*results, strict=True):
        assert ((a - b).abs().max() / b.abs().max()).item() <= 1e-5


def _nonfinite_pattern(t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return t.isnan(), t.isposinf(), t.isneginf()


def _poisoned_run(model, where: str, value: float, dtype: torch.dtype, packed: bool):
    """_run with one element of ``where`` (the input, hx or a parameter) set to ``value``."""
    T, N, D = 5, 3, 3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(T, N, D, generator=g, dtype=dtype)
    hx = torch.randn(model.num_layers * (2 if model.bidirectional else 1), N, model.hidden_size,
                     generator=g, dtype=dtype)
    with torch.no_grad():
        target = {"input": x, "hx": hx, **dict(model.named_parameters())}[where]
        target.view(-1)[target.numel() // 2] = value
    x.requires_grad_()
    hx.requires_grad_()
    inputs = pack_padded_sequence(x, [5, 4, 2]) if packed else x
    return _run(model, inputs, [x], hx)


@needs_accel
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "nonlinearity, loop",
    [("tanh", "C"), ("tanh", "python"), ("relu", "C"), ("relu", "python")],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("packed", [False, True])
def test_nan_and_inf_propagate_as_in_nn_rnn(value, nonlinearity, loop, dtype, packed):
    """Issue 9 item 1: the C loop's tanh clamp and relu once turned a NaN into ±1 or 0.

    One NaN or ±inf in the input, hx or any one weight: the outputs, h_n and every gradient have
    NaN and ±inf exactly where nn.RNN's have them, and nn.RNN's values elsewhere.
    """
    D, H, L = 3, 4, 2
    torch.manual_seed(0)
    ours = scratchrnn.RNN(D, H, L, nonlinearity=nonlinearity, bidirectional=True, dtype=dtype)
    oracle = torch.nn.RNN(D, H, L, nonlinearity=nonlinearity, bidirectional=True, dtype=dtype)
    oracle.load_state_dict(ours.state_dict())
    tol = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {"atol": 1e-5, "rtol": 1e-5}
    for where in ["input", "hx", *(name for name, _ in ours.named_parameters())]:
        expected = _poisoned_run(oracle, where, value, dtype, packed)
        accel.set_enabled(loop == "C")
        try:
            got = _poisoned_run(ours, where, value, dtype, packed)
        finally:
            accel.set_enabled(True)
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            for mask_a, mask_b in zip(_nonfinite_pattern(a), _nonfinite_pattern(b), strict=True):
                assert torch.equal(mask_a, mask_b), f"{where}: result {i}"
            finite = torch.isfinite(b)
            torch.testing.assert_close(a[finite], b[finite], **tol)


@pytest.fixture
def fresh_cache(monkeypatch, tmp_path):
    """An empty accelerator cache for one test; the process's library is rebuilt afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    accel.set_enabled(True)  # clears the loaded library: the next use looks in the new cache
    yield tmp_path / "scratchrnn"
    monkeypatch.undo()
    accel.set_enabled(True)


_CHILD = """
import torch, scratchrnn
from scratchrnn.core import accel
torch.manual_seed(0)
ours, oracle = scratchrnn.RNN(3, 4, dtype=torch.float64), torch.nn.RNN(3, 4, dtype=torch.float64)
oracle.load_state_dict(ours.state_dict())
x = torch.randn(5, 2, 3, dtype=torch.float64)
assert accel.available() and torch.allclose(ours(x)[0], oracle(x)[0], rtol=0, atol=1e-14)
"""


def _new_process_uses_the_c_loops(cache: Path) -> None:
    """In a fresh process (nothing loaded yet, as on a cluster node): the C loops load and are right."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cache.parent)}
    subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, timeout=120)


def _cached_target(cache: Path) -> Path:
    return cache / f"steps-{accel._build_key(accel._compiler())}.so"


@needs_accel
def test_a_corrupt_cached_library_is_rebuilt(fresh_cache):
    target = _cached_target(fresh_cache)
    fresh_cache.mkdir(parents=True)
    target.write_bytes(b"\x7fELF but truncated")
    _new_process_uses_the_c_loops(fresh_cache)
    assert target.stat().st_size > 1000  # the rebuilt library, under the same key


@needs_accel
@pytest.mark.parametrize("function", ["tanh", "sigmoid", "rsqrt"])  # sigmoid: the GRU's; rsqrt: layer norm's
def test_a_cached_library_that_computes_wrong_is_rebuilt(fresh_cache, function):
    """The load-time self-test runs each cell: a build whose Elman step (tanh), GRU step (sigmoid)
    or layer norm (rsqrt, double only) computes wrong is rebuilt, though it loads and links."""
    target = _cached_target(fresh_cache)
    fresh_cache.mkdir(parents=True)
    wrong = fresh_cache / "wrong.c"  # a foreign build: loads and links, but `function` is the identity
    source = accel._SOURCE.read_text()
    heads = f"static inline float {function}_f(float x) {{", f"static inline double {function}_d(double x) {{"
    heads = [head for head in heads if head in source or function != "rsqrt"]  # rsqrt_d only
    for head in heads:
        assert head in source  # else this test would build the right library and prove nothing
        source = source.replace(head, head + " return x;")
    wrong.write_text(source)
    subprocess.run([accel._compiler()[0], *accel._CFLAGS, f"-I{accel._SOURCE.parent}", str(wrong), "-o",
                    str(target)], check=True)
    accel._sidecar(target).write_text(accel._fingerprint(target))  # intact: only the self-test can tell
    built = target.stat().st_mtime_ns
    _new_process_uses_the_c_loops(fresh_cache)
    assert target.stat().st_mtime_ns != built


def test_every_c_source_is_in_the_build_key(monkeypatch, tmp_path):
    """A change to the driver or to any cell's C file makes another library (issue 17 item 4)."""
    copy = tmp_path / "core"
    (copy / "cells").mkdir(parents=True)
    for source in accel._SOURCES:
        (copy / source.relative_to(accel._SOURCE.parent)).write_bytes(source.read_bytes())
    assert {p.name for p in accel._SOURCES} >= {"_steps.c", "elman.c", "gru.c"}
    monkeypatch.setattr(accel, "_SOURCE", copy / "_steps.c")
    monkeypatch.setattr(accel, "_SOURCES", (copy / "_steps.c", *sorted(copy.glob("cells/*.c"))))
    cc = ("cc", "version")
    keys = {accel._build_key(cc)}
    for source in accel._SOURCES:
        source.write_text(source.read_text() + "\n/* changed */\n")
        keys.add(accel._build_key(cc))
    assert len(keys) == 1 + len(accel._SOURCES)


@needs_accel
def test_another_cpu_gets_its_own_build(fresh_cache, monkeypatch):
    assert accel.available()
    here = accel.cpu_info()
    monkeypatch.setattr(accel, "cpu_info", lambda: {**here, "flags": "sse2"})
    accel.set_enabled(True)
    assert accel.available()
    assert len(list(fresh_cache.glob("steps-*.so"))) == 2


def test_a_failing_compiler_warns_once(fresh_cache, monkeypatch, caplog):
    cc = fresh_cache.parent / "cc"
    cc.write_text("#!/bin/sh\necho 'cc: error: out of licences' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    accel.set_enabled(True)
    with caplog.at_level(logging.WARNING, logger=accel.__name__):
        assert not accel.available()
        assert not accel.available()
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "out of licences" in record.getMessage() and "PyTorch loops" in record.getMessage()


@needs_accel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("H", [3, 33, 128, 129, 256, 257])
def test_small_kernel_and_blas_steps_agree_with_nn_rnn_across_the_threshold(H, dtype):
    """Steps of up to 16 rows (H <= 256) use _steps.c's own small GEMM, larger ones BLAS (float32:
    MKL's packed GEMM for the widest steps, plain sgemm for the others); a packed batch whose step
    sizes shrink from 40 rows to 4 crosses from one to the next mid-sequence."""
    lengths = [9] * 4 + [6] * 12 + [3] * 20 + [2] * 4  # step sizes 40, 40, 36, 16, 16, 16, 4, 4, 4
    torch.manual_seed(0)
    ours = scratchrnn.RNN(5, H, bidirectional=True, dtype=dtype)
    oracle = torch.nn.RNN(5, H, bidirectional=True, dtype=dtype)
    oracle.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randn(n, 5, generator=g, dtype=dtype, requires_grad=True) for n in lengths]
    hx = torch.randn(2, len(lengths), H, generator=g, dtype=dtype, requires_grad=True)
    got = _run(ours, pack_sequence(seqs, enforce_sorted=False), seqs, hx)
    expected = _run(oracle, pack_sequence(seqs, enforce_sorted=False), seqs, hx)
    tol = {"atol": 1e-12, "rtol": 0} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 1e-4}
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **tol)


@needs_accel
@pytest.mark.skipif(not hasattr(accel._torch_cpu_library(), "mkl_set_num_threads_local_"),
                    reason="torch without MKL: the loops keep torch's thread count")
@pytest.mark.parametrize("N, H", [(32, 64), (64, 256)])  # N·H² below and above ONE_THREAD_MACS
def test_small_steps_on_one_blas_thread_leave_the_thread_count_as_it_was(N, H):
    """Small steps run BLAS on one thread for the call (mkl_set_num_threads_local); the caller's
    thread count must be back afterwards, also for the threads torch reports and MKL uses."""
    mkl_max_threads = accel._torch_cpu_library().mkl_get_max_threads
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = scratchrnn.RNN(8, H)
        x = torch.randn(5, N, 8, requires_grad=True)
        model(x)[0].sum().backward()
        assert torch.get_num_threads() == 2 and mkl_max_threads() == 2
    finally:
        torch.set_num_threads(before)
