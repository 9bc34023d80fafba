"""Optional accelerators: the per-step loops of the RNN in C (``_steps.c``), for CPU float32/float64,
and oneDNN for the large float32 GEMMs done once per layer.

The pure-PyTorch loops in :mod:`scratchrnn.core.functional` are the reference and the fallback; this module
only replaces the sequential part of each layer (the GEMM with W_hh and the nonlinearity per step,
and their backward), where issuing one PyTorch op per step from Python costs more than the
arithmetic for small batches. Both paths pass the same parity tests.

The C file is compiled on first use with the system's C compiler into a per-user cache
(``$XDG_CACHE_HOME/scratchrnn``, or ``~/.cache/scratchrnn``) and loaded with ctypes. It calls
BLAS (``sgemm_``/``dgemm_``) from the library PyTorch already loaded (``libtorch_cpu``), whose
addresses we hand it, so it links nothing; its tanh is its own vectorisable one (a few ulp in
double, so float32 results are within one ulp of the exact value).
If any of that is missing — no compiler, a PyTorch build without MKL — :func:`available` is False
and everything runs in PyTorch. ``SCRATCHRNN_ACCEL=0`` turns the accelerators off.

The GEMMs done once per layer (the input projection, dW_ih, dW_hh, dx) are large; for float32 on
the CPU, :func:`matmul` sends them to oneDNN, which PyTorch carries too, when they have at least
``_ONEDNN_MIN_MACS`` multiply-adds. On this project's AMD EPYC test machine MKL's sgemm reached
about 100 GFLOP/s and oneDNN ran the same products 1.3–2.5× faster (benchmarks/RESULTS.md). The
choice depends only on shapes and dtype, never on a timing, so a run computes the same bits every
time. Results agree with MKL's to float32 rounding (about 1e-6 relative).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
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


def _compile(source: Path, target: Path) -> None:
    """Compile ``source`` into the shared library ``target``, atomically (temp file + rename)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()[0]
    if shutil.which(cc) is None:
        raise OSError(f"no C compiler found (tried {cc!r})")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [cc, "-O3", "-march=native", "-fPIC", "-shared",
               str(source), "-o", tmp]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
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


@cache
def _library() -> ctypes.CDLL | None:
    """The compiled loops, or None when they cannot be built or loaded here."""
    if not _enabled:
        return None
    try:
        torch_lib = _torch_cpu_library()
        symbols = [ctypes.cast(getattr(torch_lib, s), ctypes.c_void_p)
                   for s in ("sgemm_", "dgemm_")]
        digest = hashlib.sha256(_SOURCE.read_bytes()).hexdigest()[:16]
        target = _cache_dir() / f"steps-{digest}-{sys.implementation.cache_tag}.so"
        if not target.exists():
            _compile(_SOURCE, target)
        lib = ctypes.CDLL(str(target))
        lib.scratchrnn_init(*symbols)
    except (OSError, AttributeError, subprocess.CalledProcessError) as err:
        log.debug("scratchrnn accelerator unavailable, using the PyTorch loops: %s", err)
        return None
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


def _steps(batch_sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    sizes = torch.tensor(batch_sizes, dtype=torch.int64)
    offsets = torch.zeros_like(sizes)
    torch.cumsum(sizes[:-1], 0, out=offsets[1:])
    return sizes, offsets


def _suffix(t: Tensor) -> str:
    return "f32" if t.dtype == torch.float32 else "f64"


def forward_steps(out: Tensor, h0: Tensor, W_hh: Tensor, batch_sizes: Sequence[int],
                  h_n: Tensor, relu: bool, reverse: bool) -> None:
    """The step loop of :func:`scratchrnn.core.functional.layer_forward` (``out`` holds the projection)."""
    H = W_hh.shape[0]
    assert out.stride(1) == 1 and h0.is_contiguous() and h_n.is_contiguous()
    W_hh = W_hh.contiguous()
    sizes, offsets = _steps(batch_sizes)
    fn = getattr(_library(), f"scratchrnn_forward_{_suffix(out)}")
    fn(len(batch_sizes), _ptr(sizes), _ptr(offsets), H, _ptr(out), out.stride(0), _ptr(h0),
       _ptr(W_hh), _ptr(h_n), int(reverse), int(relu))


def backward_steps(dh: Tensor, out: Tensor, W_hh: Tensor, batch_sizes: Sequence[int],
                   dh0: Tensor, relu: bool, reverse: bool) -> None:
    """The BPTT loop of :func:`scratchrnn.core.functional.layer_backward`: turns ``dh`` into da in place."""
    H = W_hh.shape[0]
    assert dh.is_contiguous() and out.stride(1) == 1 and dh0.is_contiguous()
    W_hh = W_hh.contiguous()
    sizes, offsets = _steps(batch_sizes)
    fn = getattr(_library(), f"scratchrnn_backward_{_suffix(dh)}")
    fn(len(batch_sizes), _ptr(sizes), _ptr(offsets), H, _ptr(dh), _ptr(out), out.stride(0),
       _ptr(W_hh), _ptr(dh0), int(reverse), int(relu))
