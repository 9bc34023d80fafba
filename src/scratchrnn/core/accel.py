"""Optional accelerators: the per-step loops of the RNN in C (``_steps.c``), for CPU float32/float64,
and oneDNN for the large float32 GEMMs done once per layer.

The pure-PyTorch loops in :mod:`scratchrnn.core.functional` are the reference and the fallback; this module
only replaces the sequential part of each layer (the GEMM with W_hh and the nonlinearity per step,
and their backward), where issuing one PyTorch op per step from Python costs more than the
arithmetic for small batches. Both paths pass the same parity tests.

The C file is compiled on first use with the system's C compiler into a per-user cache
(``$XDG_CACHE_HOME/scratchrnn``, or ``~/.cache/scratchrnn``) and loaded with ctypes; the file's
name is a hash of everything the binary depends on (source, compiler and its version, flags, the
CPU's identity and feature flags, the Python tag), and a cached file is used only if it passes a
tiny self-test (else rebuilt once). It calls BLAS (``sgemm_``/``dgemm_``) from the library
PyTorch already loaded (``libtorch_cpu``), whose addresses we hand it, so it links nothing; its
tanh is its own vectorisable one (a few ulp in double, so float32 results are within one ulp of
the exact value).
If any of that is missing — no compiler, a PyTorch build without MKL — :func:`available` is False
and everything runs in PyTorch. ``SCRATCHRNN_ACCEL=0`` turns the accelerators off.

The GEMMs done once per layer (the input projection, dW_ih, dW_hh, dx) are large; for float32 on
the CPU, :func:`matmul` sends them to oneDNN, which PyTorch carries too, when they have at least
``_ONEDNN_MIN_MACS`` multiply-adds, where oneDNN was faster than MKL on the machines we measured
(benchmarks/RESULTS.md has the figures). The choice depends only on shapes and dtype, never on a
timing, so a run computes the same bits every time. Results agree with MKL's to float32 rounding
(about 1e-6 relative).
"""

from __future__ import annotations

import _ctypes
import ctypes
import hashlib
import logging
import operator
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from functools import cache, lru_cache
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("_steps.c")  # the driver; it includes each cell's cells/<name>.c
_SOURCES = (_SOURCE, *sorted(_SOURCE.parent.glob("cells/*.c")))  # every source the library is built from
_enabled = os.environ.get("SCRATCHRNN_ACCEL", "1") != "0"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scratchrnn"


_CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared")

# SCRATCHRNN_SANITIZE=address builds the C loops with AddressSanitizer (a build of its own, under
# its own key), for the tests that run the fuzz cases under it. Python is not built with ASan, so
# the process must preload the runtime: LD_PRELOAD=$(cc -print-file-name=libasan.so), and
# ASAN_OPTIONS=detect_leaks=0 (the interpreter's own allocations are not leaks to report).
_SANITIZERS = {"address": ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")}


def _build_flags() -> tuple[str, ...]:
    """The compiler's flags: _CFLAGS, the sanitizer's when SCRATCHRNN_SANITIZE asks for one."""
    sanitizer = os.environ.get("SCRATCHRNN_SANITIZE", "")
    if sanitizer and sanitizer not in _SANITIZERS:
        raise OSError(f"SCRATCHRNN_SANITIZE must be one of {sorted(_SANITIZERS)}, got {sanitizer!r}")
    return (*_CFLAGS, *_SANITIZERS.get(sanitizer, ()))


@cache
def cpu_info() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ('model name', 'flags', ...); {} where absent."""
    try:
        with open("/proc/cpuinfo") as f:
            first_cpu = f.read().split("\n\n")[0].splitlines()
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first_cpu if ":" in line)}


def _compiler() -> tuple[str, str]:
    """The C compiler's resolved path and its ``--version`` banner."""
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    path = shutil.which(cc)
    if path is None:
        raise OSError(f"no C compiler found (tried {cc!r})")
    banner = subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout
    return os.path.realpath(path), banner.strip()


def _build_key(cc: tuple[str, str]) -> str:
    """What the binary depends on: every C source, the compiler, its flags and the CPU.

    -march=native bakes this CPU's instruction set into the library, so the key holds the CPU's
    identity and feature flags: a node with another CPU (a cluster with a shared home) builds its
    own instead of loading one that dies with SIGILL, which no Python code could catch.
    """
    cpu = cpu_info()
    cpu_id = [cpu.get(k, "") for k in ("vendor_id", "cpu family", "model", "model name", "flags")]
    parts = [*cc, *_build_flags(), platform.machine(), platform.processor(), *cpu_id,
             sys.implementation.cache_tag]
    digest = hashlib.sha256()
    for source in _SOURCES:
        digest.update(f"{source.relative_to(_SOURCE.parent)}\0".encode() + source.read_bytes() + b"\0")
    digest.update("\0".join(parts).encode())
    return digest.hexdigest()[:16]


def _sidecar(target: Path) -> Path:
    return target.with_suffix(".sha256")


def _fingerprint(path: Path) -> str:
    """A file's size and sha256, as the sidecar holds them."""
    data = path.read_bytes()
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"


def _write_atomically(path: Path, write) -> None:
    """``write(tmp_path)``, then rename onto ``path``: a reader sees the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _compile(cc: str, target: Path) -> None:
    """Compile the loops into the shared library ``target``, atomically (temp file + rename), then its
    sidecar (size and sha256, also atomically): a library without a matching sidecar is never loaded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = []

    def build(tmp: Path) -> None:
        subprocess.run([cc, *_build_flags(), str(_SOURCE), "-o", str(tmp)], check=True, capture_output=True,
                       text=True)
        fingerprint.append(_fingerprint(tmp))

    _write_atomically(target, build)
    _write_atomically(_sidecar(target), lambda tmp: tmp.write_text(fingerprint[0]))


def _intact(target: Path) -> bool:
    """Whether ``target`` is the file its sidecar describes (size, then sha256).

    dlopen of a damaged library (truncated by a full disk or a killed copy) is not an error that
    Python could catch: mapping a segment past the end of the file dies with SIGBUS. So nothing
    is loaded that does not match what was written after the build.
    """
    try:
        expected = _sidecar(target).read_text()
        size = int(expected.split()[0])
        return target.stat().st_size == size and _fingerprint(target) == expected
    except (OSError, ValueError, IndexError):
        return False


def _torch_cpu_library() -> ctypes.CDLL:
    lib_dir = Path(torch.__file__).parent / "lib"
    names = {"linux": "libtorch_cpu.so", "darwin": "libtorch_cpu.dylib"}
    name = names.get(sys.platform)
    if name is None or not (lib_dir / name).exists():
        raise OSError(f"libtorch_cpu not found in {lib_dir}")
    return ctypes.CDLL(str(lib_dir / name))  # already loaded by torch: this only finds it


def _optional_symbol(lib: ctypes.CDLL, name: str) -> ctypes.c_void_p:
    """The address of ``name`` in ``lib``, or NULL (the C side then does without)."""
    return ctypes.cast(getattr(lib, name), ctypes.c_void_p) if hasattr(lib, name) else ctypes.c_void_p()


# The entry points' C signatures (each pointer followed by its length in elements; see _steps.c
# and cells/*.c). Declared, so that ctypes passes the int64s as int64 and checks the arguments.
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
_STEPS = [_I64, _P, _P, _I64]  # T, sizes, offsets, H
_SIGNATURES = {
    "forward": [*_STEPS, _P, _I64, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64, _INT, _INT],
    "backward": [*_STEPS, _P, _I64, _P, _I64, _I64, _P, _I64, _P, _I64, _INT, _INT],
    "gru_forward": [*_STEPS, _P, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64, _I64, _P, _I64, _INT],
    "gru_backward_recompute": [*_STEPS, _P, _I64, _P, _I64, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64,
                               _P, _I64, _INT],
    "options_forward": [*_STEPS, _P, _I64, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64,
                        _P, _I64, _INT, _INT],
    "options_backward": [*_STEPS, _P, _I64, _P, _I64, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64, _P, _I64,
                         _P, _I64, _P, _I64, _INT, _INT],
}
_STEPS_ERRORS = {1: "inconsistent step sizes or width", 2: "a buffer too small for the steps",
                 3: "out of memory", 4: "an unknown nonlinearity code"}
# The nonlinearities of the options' entry points (cells/options.c), in the order of its ACT_* codes.
ACTIVATIONS = ("tanh", "relu", "sigmoid", "softsign", "leaky_relu", "silu", "gelu")


def _declare(lib: ctypes.CDLL) -> None:
    for name, argtypes in _SIGNATURES.items():
        for suffix in ("f32", "f64"):
            fn = getattr(lib, f"scratchrnn_{name}_{suffix}")
            fn.argtypes, fn.restype = argtypes, ctypes.c_int


def _passes_self_test(lib: ctypes.CDLL) -> bool:
    """A two-step forward of each cell through the library, float32 and float64, against the same
    in torch (the Elman cell with tanh, the GRU with its gates, the Elman cell with layer norm and
    zoneout, the Elman cell with gelu through the options' loop)."""
    g = torch.Generator().manual_seed(0)
    T, N, H = 2, 2, 3
    sizes = torch.full((T,), N, dtype=torch.int64)
    offsets = torch.arange(T, dtype=torch.int64) * N
    tol = {"rtol": 1e-5, "atol": 1e-6}
    for dtype in (torch.float32, torch.float64):
        suffix = "f32" if dtype == torch.float32 else "f64"
        a, h0, W_hh = (torch.randn(size, generator=g, dtype=dtype) for size in ((T * N, H), (N, H), (H, H)))
        expected, h = a.clone(), h0
        for t in range(T):
            h = expected[t * N : (t + 1) * N].addmm_(h, W_hh.t()).tanh_()
        h_n = torch.empty(N, H, dtype=dtype)
        rc = getattr(lib, f"scratchrnn_forward_{suffix}")(
            T, _ptr(sizes), _ptr(offsets), H, *_buf(a), H, *_buf(h0), *_buf(W_hh), None, 0, *_buf(h_n), 0, 0)
        if rc != 0 or not (torch.allclose(a, expected, **tol) and torch.equal(h_n, a[-N:])):
            return False
        xp, W_hh, b_hh = (torch.randn(size, generator=g, dtype=dtype) for size in ((T * N, 3 * H), (3 * H, H),
                                                                                  (3 * H,)))
        out, h_n = torch.empty(T * N, H, dtype=dtype), torch.empty(N, H, dtype=dtype)
        rc = getattr(lib, f"scratchrnn_gru_forward_{suffix}")(
            T, _ptr(sizes), _ptr(offsets), H, *_buf(xp), *_buf(h0), *_buf(W_hh), *_buf(b_hh), *_buf(out), H,
            *_buf(h_n), 0)
        h, expected = h0, []
        for t in range(T):
            x_r, x_z, x_n = xp[t * N : (t + 1) * N].chunk(3, 1)
            h_r, h_z, h_n_gate = torch.addmm(b_hh, h, W_hh.t()).chunk(3, 1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n_gate)
            h = n + z * (h - n)
            expected.append(h)
        if rc != 0 or not (torch.allclose(out, torch.cat(expected), **tol) and torch.equal(h_n, out[-N:])):
            return False
        a, gamma, beta = (torch.randn(size, generator=g, dtype=dtype) for size in ((T * N, H), (H,), (H,)))
        W_hh, z = torch.randn(H, H, generator=g, dtype=dtype), torch.rand(T * N, H, generator=g, dtype=dtype)
        expected, h = a.clone(), h0
        for t in range(T):
            rows = slice(t * N, (t + 1) * N)
            a_t = expected[rows].addmm_(h, W_hh.t())
            h_cand = torch.tanh(torch.nn.functional.layer_norm(a_t, (H,), gamma, beta, eps=1e-5))
            h = expected[rows] = z[rows] * h + (1 - z[rows]) * h_cand
        rc = getattr(lib, f"scratchrnn_options_forward_{suffix}")(
            T, _ptr(sizes), _ptr(offsets), H, *_buf(a), H, *_buf(h0), *_buf(W_hh), None, 0, *_buf(gamma),
            *_buf(beta), *_buf(z), *_buf(h_n), 0, 0)
        if rc != 0 or not (torch.allclose(a, expected, **tol) and torch.equal(h_n, a[-N:])):
            return False
        a = torch.randn(T * N, H, generator=g, dtype=dtype) * 3  # gelu (erf), no options
        expected, h = a.clone(), h0
        for t in range(T):
            rows = slice(t * N, (t + 1) * N)
            h = expected[rows] = torch.nn.functional.gelu(expected[rows].addmm_(h, W_hh.t()))
        rc = getattr(lib, f"scratchrnn_options_forward_{suffix}")(
            T, _ptr(sizes), _ptr(offsets), H, *_buf(a), H, *_buf(h0), *_buf(W_hh), None, 0, None, 0, None, 0,
            None, 0, *_buf(h_n), 0, ACTIVATIONS.index("gelu"))
        if rc != 0 or not (torch.allclose(a, expected, **tol) and torch.equal(h_n, a[-N:])):
            return False
    return True


def _load(target: Path, blas: Sequence[ctypes.c_void_p]) -> ctypes.CDLL | None:
    """The library at ``target`` if it matches its sidecar, loads, links and passes the self-test;
    else None (unloaded)."""
    if not _intact(target):
        log.debug("cached accelerator %s does not match its sidecar", target)
        return None
    try:
        lib = ctypes.CDLL(str(target))
        lib.scratchrnn_init(*blas)
        _declare(lib)
    except (OSError, AttributeError) as err:
        log.debug("cached accelerator %s does not load: %s", target, err)
        return None
    if _passes_self_test(lib):
        return lib
    log.debug("cached accelerator %s fails its self-test", target)
    _ctypes.dlclose(lib._handle)  # so that loading the rebuilt file maps it, not this one again
    return None


@cache
def _library() -> ctypes.CDLL | None:
    """The compiled loops, or None when they cannot be built or loaded here.

    A cached library is used only if it matches its sidecar (size and sha256), loads and computes
    a tiny forward of each cell as torch does; a damaged, corrupt or foreign one is rebuilt once.
    A compiler that exists but fails gets one warning.
    """
    if not _enabled:
        return None
    try:
        torch_lib = _torch_cpu_library()
        blas = [ctypes.cast(getattr(torch_lib, s), ctypes.c_void_p) for s in ("sgemm_", "dgemm_")]
        blas += [_optional_symbol(torch_lib, s)
                 for s in ("cblas_sgemm_pack_get_size", "cblas_sgemm_pack", "cblas_sgemm_compute",
                           "mkl_set_num_threads_local_")]
        cc = _compiler()
        target = _cache_dir() / f"steps-{_build_key(cc)}.so"
        lib = _load(target, blas) if target.exists() else None
        if lib is None:
            _compile(cc[0], target)
            lib = _load(target, blas)
    except subprocess.CalledProcessError as err:
        first_line = (err.stderr or "").strip().splitlines()[:1]
        log.warning("scratchrnn: building the C loops with %s failed (exit %d%s); using the PyTorch loops",
                    err.cmd[0], err.returncode, f": {first_line[0]}" if first_line else "")
        return None
    except (OSError, AttributeError) as err:
        log.debug("scratchrnn accelerator unavailable, using the PyTorch loops: %s", err)
        return None
    if lib is None:
        log.warning("scratchrnn: the freshly built C loops fail their self-test; using the PyTorch loops")
    return lib


def available() -> bool:
    """True when the C loops are compiled, loaded and enabled."""
    return _library() is not None


def set_enabled(enabled: bool) -> None:
    """Turn the C loops on or off for this process (the PyTorch loops are used when off)."""
    global _enabled
    _enabled = enabled
    _library.cache_clear()


_ONEDNN_MIN_MACS = 1 << 22  # below this oneDNN's fixed cost per call (about 10 µs) eats the gain


@cache
def _onednn_linear():
    op = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
    return op if op is not None and torch.backends.mkldnn.is_available() else None


def matmul(A: Tensor, B: Tensor) -> Tensor:
    """A @ B (2-D), through oneDNN when it is float32 on the CPU, large and dense, else ``torch.mm``.

    Dense means A row-major and B row-major or column-major: with other strides (a column slice
    of a bidirectional layer's output, a transposed A) oneDNN was slower than MKL here, by up to
    600× for a strided B.
    """
    big = A.shape[0] * A.shape[1] * B.shape[1] >= _ONEDNN_MIN_MACS
    dense = A.is_contiguous() and (B.is_contiguous() or B.t().is_contiguous())
    if (_enabled and big and dense and A.dtype == B.dtype == torch.float32
            and A.device.type == "cpu" and B.device.type == "cpu"
            and _onednn_linear() is not None):
        return _onednn_linear()(A, B.t(), None, "none", [], "")  # linear(A, W) = A Wᵀ, W = Bᵀ
    return A @ B


def available_for(*tensors: Tensor) -> bool:
    """Whether the C loops can run on these tensors: CPU, float32 or float64, one dtype."""
    dtype = tensors[0].dtype
    return (
        dtype in (torch.float32, torch.float64)
        and all(t.device.type == "cpu" and t.dtype == dtype for t in tensors)
        and available()
    )


def _ptr(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _extent(t: Tensor) -> int:
    """How many elements from ``t.data_ptr()`` its view reaches (its last element's index + 1)."""
    if t.is_contiguous():
        return t.numel()
    return 0 if t.numel() == 0 else 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True))


def _buf(t: Tensor | None) -> tuple[int | None, int]:
    """A tensor as the C loops take it: its address and its length in elements (None, 0: none)."""
    return (None, 0) if t is None else (t.data_ptr(), _extent(t))


@lru_cache(maxsize=64)
def _padded_steps(T: int, N: int) -> tuple[Tensor, Tensor]:
    """_steps of a padded batch: made once per (T, N), as every call of a training run asks for it."""
    return torch.full((T,), N, dtype=torch.int64), torch.arange(T, dtype=torch.int64) * N


def _steps(batch_sizes: Sequence[int]) -> tuple[Tensor, Tensor, int, int]:
    """Rows per step and each step's first row, as the int64 arrays the C loops read, and (N, rows).

    Part of the door: the sizes must be integers, non-negative and never growing (the C side
    checks the arrays once more). Plain list methods, not a Python loop per step: this runs on
    every call, and at small N and H a call is tens of microseconds.
    """
    sizes = batch_sizes if type(batch_sizes) is list else list(batch_sizes)
    T = len(sizes)
    if T == 0:
        raise ValueError("Expected at least one step, got batch_sizes of length 0")
    N = operator.index(sizes[0])
    if sizes.count(N) == T:  # padded: every step has all N rows
        if N < 0:
            raise ValueError(f"Expected batch_sizes non-negative, got {N}")
        return (*_padded_steps(T, N), N, N * T)
    if sizes != sorted(sizes, reverse=True) or sizes[-1] < 0:
        raise ValueError(f"Expected batch_sizes non-negative and non-increasing, got {sizes}")
    steps = torch.tensor(sizes, dtype=torch.int64)  # TypeError for what is not a number
    offsets = torch.zeros_like(steps)
    torch.cumsum(steps[:-1], 0, out=offsets[1:])
    return steps, offsets, N, int(offsets[-1]) + int(steps[-1])


def _suffix(t: Tensor) -> str:
    return "f32" if t.dtype == torch.float32 else "f64"


# The validation door. Whatever calls the entry points below (the modules, the operators, a
# user's code), every tensor is checked here against what the C loops assume before its address
# is handed over, and the C side checks the sizes once more (it returns an error instead of
# reading past a buffer). Errors are raised as nn.RNN raises them (RuntimeError for tensors that
# do not fit, ValueError for step sizes), never with `assert`, which `python -O` removes.
# How the loop reads each tensor: CONTIGUOUS (as is), ROWS ((rows, H) with unit column stride,
# rows at least H apart: a column slice of a wider buffer; its row stride follows its length),
# READ_ROWS (the same, only read: handed over by its const address), COPIED (any strides: made
# contiguous here, a weight or bias read once per call).
_CONTIGUOUS, _ROWS, _READ_ROWS, _COPIED = "contiguous", "rows", "read rows", "copied"


def _refuse(name: str, t, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    """Raise what is wrong with ``t`` (the door's slow path: only once a check has failed)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise RuntimeError(f"Expected {name} dense (strided) for the C loops, got {t.layout}")
    if t.device.type != "cpu":
        raise RuntimeError(f"Expected {name} on the CPU for the C loops, got {t.device}")
    if t.dtype != dtype:
        raise RuntimeError(f"Expected {name} of dtype {dtype}, got {t.dtype}")
    raise RuntimeError(f"Expected {name} of shape {list(shape)}, got {list(t.shape)}")


def _door(dtype: torch.dtype, *specs: tuple[str, Tensor | None, tuple[int, ...], str]) -> tuple[list, list]:
    """Check each (name, tensor or None, shape, how it is read) and return the C arguments for them
    (address and length in elements; the row stride after a ROWS tensor) and the tensors to keep
    alive until the call (the contiguous copies)."""
    if dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"the C loops take float32 or float64, got {dtype}")
    args, keep = [], []
    for name, t, shape, read in specs:
        if t is None:
            args += (None, 0)
            continue
        if not (isinstance(t, Tensor) and t.dtype == dtype and t.is_cpu and t.layout == torch.strided
                and t.shape == shape):
            _refuse(name, t, dtype, shape)
        if read == _COPIED:
            t = t.contiguous()
            keep.append(t)
        elif read == _CONTIGUOUS and not t.is_contiguous():
            raise RuntimeError(f"Expected {name} contiguous for the C loops, got strides {t.stride()}")
        # A tensor C only reads goes by its const address: the saved output the backward reads
        # may be a copy-on-write clone (ops.py), which data_ptr() would materialise (copy).
        args += (t.const_data_ptr() if read == _READ_ROWS else t.data_ptr(), _extent(t))
        if read in (_ROWS, _READ_ROWS):
            args.append(_row_stride(name, t, shape[1]))
    return args, keep


def _row_stride(name: str, t: Tensor, H: int) -> int:
    """The row stride to hand C for a (rows, H) tensor read with unit column stride and rows at
    least H apart (a column slice of a wider buffer is fine; overlapping rows are not)."""
    if (t.shape[0] > 1 and t.stride(0) < H) or (H > 1 and t.stride(1) != 1):
        raise RuntimeError(f"Expected {name} with unit column stride and row stride >= {H}, "
                           f"got strides {t.stride()}")
    return t.stride(0) if t.shape[0] > 1 else H  # one row (or none): its stride is never used


def _width(t: Tensor, name: str) -> int:
    """H: the last size of the (rows, H) tensor the call is sized by."""
    if not isinstance(t, Tensor) or t.dim() != 2:
        raise RuntimeError(f"Expected {name} of 2 dimensions (rows, H), got "
                           f"{list(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    return t.shape[1]


def _call(name: str, t: Tensor, *args) -> None:
    """Call the C entry point ``name`` for t's dtype; raise if it refuses its arguments."""
    rc = getattr(_library(), f"scratchrnn_{name}_{_suffix(t)}")(*args)
    if rc == 3:
        raise MemoryError(f"scratchrnn C loops: {_STEPS_ERRORS[3]}")
    if rc != 0:
        raise RuntimeError(f"scratchrnn C loops refused their arguments: {_STEPS_ERRORS.get(rc, rc)}")


def forward_steps(out: Tensor, h0: Tensor, W_hh: Tensor, bias: Tensor | None, batch_sizes: Sequence[int],
                  h_n: Tensor, relu: bool, reverse: bool) -> None:
    """The step loop of :func:`scratchrnn.core.functional.layer_forward`: ``out`` holds x_t W_ihᵀ,
    each step adds h_{t-1} W_hhᵀ and ``bias`` (b_ih + b_hh, or None) and applies the nonlinearity.

    out: (rows, H), unit column stride (a column slice of a wider buffer is fine); h0, h_n: (N, H)
    contiguous; W_hh: (H, H); bias: (H,) or None; rows = sum(batch_sizes), N = batch_sizes[0].
    """
    sizes, offsets, N, rows = _steps(batch_sizes)
    H = _width(out, "out")
    args, _keep = _door(out.dtype, ("out", out, (rows, H), _ROWS), ("h0", h0, (N, H), _CONTIGUOUS),
                        ("weight_hh", W_hh, (H, H), _COPIED), ("bias", bias, (H,), _COPIED),
                        ("h_n", h_n, (N, H), _CONTIGUOUS))
    if H > 0:  # H = 0 (RNNCell(n, 0), as torch allows): nothing to compute
        _call("forward", out, len(sizes), sizes.data_ptr(), offsets.data_ptr(), H, *args, int(reverse),
              int(relu))


def backward_steps(dh: Tensor, out: Tensor, W_hh: Tensor, batch_sizes: Sequence[int],
                   dh0: Tensor, relu: bool, reverse: bool) -> None:
    """The BPTT loop of :func:`scratchrnn.core.functional.layer_backward`: turns ``dh`` into da in place.

    dh: (rows, H) contiguous; out: (rows, H), unit column stride; W_hh: (H, H); dh0: (N, H) contiguous.
    """
    sizes, offsets, N, rows = _steps(batch_sizes)
    H = _width(dh, "dh")
    args, _keep = _door(dh.dtype, ("dh", dh, (rows, H), _CONTIGUOUS), ("out", out, (rows, H), _READ_ROWS),
                        ("weight_hh", W_hh, (H, H), _COPIED), ("dh0", dh0, (N, H), _CONTIGUOUS))
    if H > 0:  # H = 0 (RNNCell(n, 0), as torch allows): nothing to compute
        _call("backward", dh, len(sizes), sizes.data_ptr(), offsets.data_ptr(), H, *args, int(reverse),
              int(relu))


def gru_forward_steps(xp: Tensor, h0: Tensor, W_hh: Tensor, b_hh: Tensor | None, batch_sizes: Sequence[int],
                      out: Tensor, h_n: Tensor, reverse: bool) -> None:
    """The GRU's step loop (cells/gru.c): h_t for every row into ``out``, each sequence's last into h_n.

    xp: (rows, 3H) contiguous, x W_ihᵀ + b_ih; h0: (N, H) contiguous; W_hh: (3H, H); b_hh: (3H,) or
    None; out: (rows, H), unit column stride; h_n: (N, H) contiguous. Nothing is saved for the
    backward, which recomputes the gates (:func:`gru_backward_recompute_steps`).
    """
    sizes, offsets, N, rows = _steps(batch_sizes)
    H = _width(out, "out")
    args, _keep = _door(xp.dtype, ("xp", xp, (rows, 3 * H), _CONTIGUOUS), ("h0", h0, (N, H), _CONTIGUOUS),
                        ("weight_hh", W_hh, (3 * H, H), _COPIED), ("bias_hh", b_hh, (3 * H,), _COPIED),
                        ("out", out, (rows, H), _ROWS), ("h_n", h_n, (N, H), _CONTIGUOUS))
    if H > 0:  # H = 0 (RNNCell(n, 0), as torch allows): nothing to compute
        _call("gru_forward", xp, len(sizes), sizes.data_ptr(), offsets.data_ptr(), H, *args, int(reverse))


def gru_backward_recompute_steps(dh: Tensor, out: Tensor, h0: Tensor, W_hh: Tensor, xp: Tensor, hp: Tensor,
                                 batch_sizes: Sequence[int], dh0: Tensor, reverse: bool) -> None:
    """The GRU's BPTT loop (cells/gru.c): the gates recomputed row by row from xp and hp, which
    receive dL/dxp and dL/dhp in their place; dL/dh0.

    dh: (rows, H) contiguous, ∂L/∂h_t from the output with ∂L/∂h_n added at each sequence's last
    step (overwritten); out, h0, W_hh: as in the forward; xp: (rows, 3H) contiguous, x W_ihᵀ + b_ih;
    hp: (rows, 3H) contiguous, h_{t−1} W_hhᵀ + b_hh of every row (both overwritten); dh0: (N, H)
    contiguous, filled.
    """
    sizes, offsets, N, rows = _steps(batch_sizes)
    H = _width(dh, "dh")
    args, _keep = _door(dh.dtype, ("dh", dh, (rows, H), _CONTIGUOUS), ("out", out, (rows, H), _READ_ROWS),
                        ("h0", h0, (N, H), _CONTIGUOUS), ("weight_hh", W_hh, (3 * H, H), _COPIED),
                        ("xp", xp, (rows, 3 * H), _CONTIGUOUS), ("hp", hp, (rows, 3 * H), _CONTIGUOUS),
                        ("dh0", dh0, (N, H), _CONTIGUOUS))
    if H > 0:  # H = 0 (RNNCell(n, 0), as torch allows): nothing to compute
        _call("gru_backward_recompute", dh, len(sizes), sizes.data_ptr(), offsets.data_ptr(), H, *args,
              int(reverse))


def _activation_code(activation: str | bool) -> int:
    """The ACT_* code of cells/options.c for a nonlinearity's name (a bool: relu or tanh)."""
    if isinstance(activation, bool):
        return int(activation)
    if activation not in ACTIVATIONS:
        raise ValueError(f"the C loops' nonlinearities are {', '.join(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS.index(activation)


def options_forward_steps(out: Tensor, h0: Tensor, W_hh: Tensor, bias: Tensor | None, gamma: Tensor | None,
                          beta: Tensor | None, z: Tensor | None, batch_sizes: Sequence[int], h_n: Tensor,
                          activation: str | bool, reverse: bool) -> None:
    """The Elman cell's step loop with layer norm and/or zoneout (cells/options.c): as
    :func:`forward_steps`, plus â = γ ⊙ n̂ + β before the nonlinearity (``gamma`` and ``beta``
    given together, or neither) and h_t = z ⊙ h_{t-1} + (1 − z) ⊙ h̃_t after it (``z`` given).
    ``activation``: the nonlinearity's name, one of :data:`ACTIVATIONS` (or a bool: relu if True,
    else tanh).

    out: (rows, H), unit column stride, holds x_t W_ihᵀ; h0, h_n: (N, H) contiguous; W_hh: (H, H);
    bias, gamma, beta: (H,) or None; z: (rows, H) contiguous or None.
    """
    sizes, offsets, N, rows = _steps(batch_sizes)
    H = _width(out, "out")
    if (gamma is None) != (beta is None):
        raise RuntimeError("options_forward_steps: layer norm takes gamma and beta together, got one")
    args, _keep = _door(out.dtype, ("out", out, (rows, H), _ROWS), ("h0", h0, (N, H), _CONTIGUOUS),
                        ("weight_hh", W_hh, (H, H), _COPIED), ("bias", bias, (H,), _COPIED),
                        ("ln_weight", gamma, (H,), _COPIED), ("ln_bias", beta, (H,), _COPIED),
                        ("zoneout mask", z, (rows, H), _CONTIGUOUS), ("h_n", h_n, (N, H), _CONTIGUOUS))
    if H > 0:  # H = 0: nothing to compute
        _call("options_forward", out, len(sizes), sizes.data_ptr(), offsets.data_ptr(), H, *args,
              int(reverse), _activation_code(activation))


def options_backward_steps(dh: Tensor, out: Tensor, W_hh: Tensor, a: Tensor, gamma: Tensor | None,
                           beta: Tensor | None, z: Tensor | None, dextra: Tensor | None,
                           batch_sizes: Sequence[int], dh0: Tensor, activation: str | bool,
                           reverse: bool) -> None:
    """The BPTT loop of :func:`options_forward_steps`: turns ``dh`` into da in place, fills dh0 and,
    with layer norm, ``dextra`` with each row's [dâ ⊙ n̂ | dâ] (dγ and dβ are their column sums).

    dh: (rows, H) contiguous; out: (rows, H), unit column stride; W_hh: (H, H); a: (rows, H)
    contiguous, a_t = x_t W_ihᵀ + b_ih + b_hh + h_{t-1} W_hhᵀ recomputed after the forward; gamma,
    beta: (H,) or None; z: (rows, H) contiguous or None; dextra: (rows, 2H) contiguous, given with
    gamma and beta, else None; dh0: (N, H) contiguous; activation: as in the forward.
    """
    sizes, offsets, N, rows = _steps(batch_sizes)
    H = _width(dh, "dh")
    if not (gamma is None) == (beta is None) == (dextra is None):
        raise RuntimeError("options_backward_steps: layer norm takes gamma, beta and dextra together")
    args, _keep = _door(dh.dtype, ("dh", dh, (rows, H), _CONTIGUOUS), ("out", out, (rows, H), _READ_ROWS),
                        ("weight_hh", W_hh, (H, H), _COPIED), ("a", a, (rows, H), _CONTIGUOUS),
                        ("ln_weight", gamma, (H,), _COPIED), ("ln_bias", beta, (H,), _COPIED),
                        ("zoneout mask", z, (rows, H), _CONTIGUOUS),
                        ("dextra", dextra, (rows, 2 * H), _CONTIGUOUS), ("dh0", dh0, (N, H), _CONTIGUOUS))
    if H > 0:  # H = 0: nothing to compute
        _call("options_backward", dh, len(sizes), sizes.data_ptr(), offsets.data_ptr(), H, *args,
              int(reverse), _activation_code(activation))
