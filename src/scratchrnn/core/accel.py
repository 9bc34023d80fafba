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
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("_steps.c")
_enabled = os.environ.get("SCRATCHRNN_ACCEL", "1") != "0"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scratchrnn"


_CFLAGS = ("-O3", "-march=native", "-fPIC", "-shared")


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
    """What the binary depends on: the source, the compiler, its flags and the CPU.

    -march=native bakes this CPU's instruction set into the library, so the key holds the CPU's
    identity and feature flags: a node with another CPU (a cluster with a shared home) builds its
    own instead of loading one that dies with SIGILL, which no Python code could catch.
    """
    cpu = cpu_info()
    cpu_id = [cpu.get(k, "") for k in ("vendor_id", "cpu family", "model", "model name", "flags")]
    parts = [*cc, *_CFLAGS, platform.machine(), platform.processor(), *cpu_id, sys.implementation.cache_tag]
    digest = hashlib.sha256(_SOURCE.read_bytes())
    digest.update("\0".join(parts).encode())
    return digest.hexdigest()[:16]


def _compile(cc: str, target: Path) -> None:
    """Compile the loops into the shared library ``target``, atomically (temp file + rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        subprocess.run([cc, *_CFLAGS, str(_SOURCE), "-o", tmp], check=True, capture_output=True, text=True)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def _passes_self_test(lib: ctypes.CDLL) -> bool:
    """A two-step forward through the library, float32 and float64, against the same in torch."""
    g = torch.Generator().manual_seed(0)
    T, N, H = 2, 2, 3
    for dtype in (torch.float32, torch.float64):
        a, h0, W_hh = (torch.randn(size, generator=g, dtype=dtype) for size in ((T * N, H), (N, H), (H, H)))
        expected, h = a.clone(), h0
        for t in range(T):
            h = expected[t * N : (t + 1) * N].addmm_(h, W_hh.t()).tanh_()
        sizes = torch.full((T,), N, dtype=torch.int64)
        offsets = torch.arange(T, dtype=torch.int64) * N
        h_n = torch.empty(N, H, dtype=dtype)
        forward = getattr(lib, f"scratchrnn_forward_{_suffix(a)}")
        forward(T, _ptr(sizes), _ptr(offsets), H, _ptr(a), H, _ptr(h0), _ptr(W_hh), None, _ptr(h_n), 0, 0)
        if not (torch.allclose(a, expected, rtol=1e-5, atol=1e-6) and torch.equal(h_n, a[-N:])):
            return False
    return True


def _load(target: Path, blas: Sequence[ctypes.c_void_p]) -> ctypes.CDLL | None:
    """The library at ``target`` if it loads, links and passes the self-test; else None (unloaded)."""
    try:
        lib = ctypes.CDLL(str(target))
        lib.scratchrnn_init(*blas)
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

    A cached library is used only if it loads and computes a tiny forward as torch does; a
    corrupt or foreign one is rebuilt once. A compiler that exists but fails gets one warning.
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


def _const_ptr(t: Tensor) -> ctypes.c_void_p:
    """For a tensor the C loop only reads: a copy-on-write tensor stays unmaterialised."""
    return ctypes.c_void_p(t.const_data_ptr())


def _steps(batch_sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Rows per step and each step's first row, as the int64 arrays the C loops read."""
    T, N = len(batch_sizes), batch_sizes[0]
    if batch_sizes[-1] == N:  # padded (sizes never grow, so all equal): no list to convert
        return torch.full((T,), N, dtype=torch.int64), torch.arange(T, dtype=torch.int64) * N
    sizes = torch.tensor(batch_sizes, dtype=torch.int64)
    offsets = torch.zeros_like(sizes)
    torch.cumsum(sizes[:-1], 0, out=offsets[1:])
    return sizes, offsets


def _suffix(t: Tensor) -> str:
    return "f32" if t.dtype == torch.float32 else "f64"


def forward_steps(out: Tensor, h0: Tensor, W_hh: Tensor, bias: Tensor | None, batch_sizes: Sequence[int],
                  h_n: Tensor, relu: bool, reverse: bool) -> None:
    """The step loop of :func:`scratchrnn.core.functional.layer_forward`: ``out`` holds x_t W_ihᵀ,
    each step adds h_{t-1} W_hhᵀ and ``bias`` (b_ih + b_hh, or None) and applies the nonlinearity."""
    H = W_hh.shape[0]
    assert out.stride(1) == 1 and h0.is_contiguous() and h_n.is_contiguous()
    W_hh = W_hh.contiguous()
    bias = None if bias is None else bias.contiguous()
    sizes, offsets = _steps(batch_sizes)
    fn = getattr(_library(), f"scratchrnn_forward_{_suffix(out)}")
    fn(len(batch_sizes), _ptr(sizes), _ptr(offsets), H, _ptr(out), out.stride(0), _ptr(h0),
       _ptr(W_hh), None if bias is None else _ptr(bias), _ptr(h_n), int(reverse), int(relu))


def backward_steps(dh: Tensor, out: Tensor, W_hh: Tensor, batch_sizes: Sequence[int],
                   dh0: Tensor, relu: bool, reverse: bool) -> None:
    """The BPTT loop of :func:`scratchrnn.core.functional.layer_backward`: turns ``dh`` into da in place."""
    H = W_hh.shape[0]
    assert dh.is_contiguous() and out.stride(1) == 1 and dh0.is_contiguous()
    W_hh = W_hh.contiguous()
    sizes, offsets = _steps(batch_sizes)
    fn = getattr(_library(), f"scratchrnn_backward_{_suffix(dh)}")
    fn(len(batch_sizes), _ptr(sizes), _ptr(offsets), H, _ptr(dh), _const_ptr(out), out.stride(0),
       _ptr(W_hh), _ptr(dh0), int(reverse), int(relu))
