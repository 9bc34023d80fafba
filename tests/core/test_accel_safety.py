"""Untrusted shapes cannot crash the C loop, and a damaged cached library heals (issue 18 items 1
and 4). Whatever could crash runs in a subprocess: a segfault fails the test, not pytest."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scratchrnn.core import accel

needs_accel = pytest.mark.skipif(not accel.available(), reason="no C compiler or BLAS here")
FUZZ = Path(__file__).with_name("accel_fuzz.py")


def _python(code_or_script, env=None, timeout=300, args=()):
    """Run a script (a Path) or code in a fresh interpreter; its CompletedProcess, whatever the exit."""
    source = [str(code_or_script)] if isinstance(code_or_script, Path) else ["-c", code_or_script]
    return subprocess.run([sys.executable, *source, *args], env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, check=False)


def _report(result) -> str:
    return (f"exit {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
            f"--- stderr\n{result.stderr[-8000:]}")


_WRONG_WEIGHT_HH = """
import sys, torch, scratchrnn
from scratchrnn.core import accel
H = int(sys.argv[1])
for c_loop in (True, False):
    accel.set_enabled(c_loop)
    rnn = scratchrnn.RNN(3, H)
    rnn.weight_hh_l0 = torch.nn.Parameter(torch.randn(H, 1))
    try:
        rnn(torch.randn(5, 2, 3))
    except RuntimeError as err:
        print("C" if c_loop else "PyTorch", "loop: RuntimeError:", err)
    else:
        sys.exit(f"{'C' if c_loop else 'PyTorch'} loop computed with a weight_hh of shape ({H}, 1)")
"""


@needs_accel
@pytest.mark.parametrize("H", [8, 4096])
def test_a_weight_hh_of_the_wrong_shape_raises_like_nn_rnn(H):
    """Issue 18 item 2: weight_hh_l0 of shape (H, 1) segfaulted the C loop at H = 4096 and gave
    garbage at H = 8 (nn.RNN raises a RuntimeError; so must both our loops)."""
    result = _python(_WRONG_WEIGHT_HH, args=[str(H)])
    assert result.returncode == 0, _report(result)
    assert result.stdout.count("RuntimeError") == 2


@needs_accel
def test_fuzzed_shapes_dtypes_and_strides_raise_or_match_nn_rnn():
    """The hypothesis fuzz (accel_fuzz.py) on both loops: an exception or nn.RNN's result, no crash."""
    result = _python(FUZZ, args=["200"], timeout=600)
    assert result.returncode == 0, _report(result)


def _asan_preload() -> str | None:
    """LD_PRELOAD for a Python not built with ASan: the compiler's AddressSanitizer runtime first,
    and libstdc++ with it (else ASan finds no __cxa_throw to intercept at start-up, and the first
    C++ exception torch throws, for a refused shape, stops the process with "CHECK failed"). None
    where the compiler has no ASan runtime."""
    try:
        cc = accel._compiler()[0]
    except OSError:
        return None
    paths = []
    for name in ("libasan.so", "libstdc++.so.6"):
        path = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True,
                              check=False).stdout.strip()
        if not (os.path.isabs(path) and os.path.exists(path)):  # else cc echoes the bare name
            return None
        paths.append(os.path.realpath(path))
    return ":".join(paths)


_OUT_OF_BOUNDS = """
import ctypes, torch
from scratchrnn.core import accel
assert "-fsanitize=address" in accel._build_flags() and accel.available()
a = torch.zeros(8, dtype=torch.float64)
accel._library().scratchrnn_tanh_f64(ctypes.c_int64(9), ctypes.c_void_p(a.data_ptr()))  # one past the end
"""


@needs_accel
@pytest.mark.slow
@pytest.mark.skipif(_asan_preload() is None, reason="the C compiler has no AddressSanitizer runtime")
def test_the_fuzz_cases_run_clean_under_address_sanitizer(tmp_path):
    """The C loop built with -fsanitize=address (SCRATCHRNN_SANITIZE=address, its own cache entry)
    runs the fuzz cases and the GRU's step tests with no report. Python is not built with ASan,
    so its runtime is preloaded; leak detection is off (the interpreter's own allocations are not
    ours to report). A planted read past a buffer first proves that a report fails the run."""
    env = {"SCRATCHRNN_SANITIZE": "address", "LD_PRELOAD": _asan_preload(), "XDG_CACHE_HOME": str(tmp_path),
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86"}
    planted = _python(_OUT_OF_BOUNDS, env=env)
    assert planted.returncode == 86 and "heap-buffer-overflow" in planted.stderr, _report(planted)
    result = _python(FUZZ, env=env, args=["60"], timeout=900)
    assert result.returncode == 0 and "AddressSanitizer" not in result.stderr, _report(result)
    gru = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(Path(__file__).with_name("test_accel_gru.py"))], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=900, check=False)  # the GRU's steps too
    assert gru.returncode == 0 and "AddressSanitizer" not in gru.stdout + gru.stderr, _report(gru)


_USES_THE_C_LOOPS = """
import torch, scratchrnn
from scratchrnn.core import accel
torch.manual_seed(0)
ours, oracle = scratchrnn.RNN(3, 4, dtype=torch.float64), torch.nn.RNN(3, 4, dtype=torch.float64)
oracle.load_state_dict(ours.state_dict())
x = torch.randn(5, 2, 3, dtype=torch.float64)
assert accel.available() and torch.allclose(ours(x)[0], oracle(x)[0], rtol=0, atol=1e-14)
"""


@needs_accel
@pytest.mark.parametrize("damage", ["truncated", "sidecar missing", "sidecar wrong"])
def test_a_damaged_cached_library_is_rebuilt(tmp_path, damage):
    """Issue 18 item 4: a cached library cut short (a full disk, a killed copy) killed every run
    with SIGBUS inside dlopen until the cache was deleted by hand. It must be rebuilt and work."""
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    first = _python(_USES_THE_C_LOOPS, env=env)
    assert first.returncode == 0, _report(first)
    (target,) = (tmp_path / "scratchrnn").glob("steps-*.so")
    size = target.stat().st_size
    if damage == "truncated":
        with open(target, "r+b") as f:
            f.truncate(size // 2)
    elif damage == "sidecar missing":
        accel._sidecar(target).unlink()
    else:
        accel._sidecar(target).write_text(f"{size} {'0' * 64}\n")
    second = _python(_USES_THE_C_LOOPS, env=env)
    assert second.returncode == 0, _report(second)
    assert target.stat().st_size == size and accel._intact(target)
