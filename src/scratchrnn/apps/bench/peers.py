"""The peer benchmark: scratchrnn against what a user could pick instead, and the machine's limits.

Peers, each given the same weights (nn.RNN's or nn.GRU's init) and the same input, one layer,
float32, for each of two cells: the tanh RNN and the GRU (PyTorch's, the reset gate applied after
the recurrent product: n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))):

    scratchrnn     scratchrnn.RNN / scratchrnn.GRU (skipped with a note while the GRU is not built)
    nn.RNN/nn.GRU  torch.nn.RNN / torch.nn.GRU (their CPU step loop; autograd for the backward)
    jax            jax.lax.scan of the step under jax.jit; jax.grad of output.sum() under jit
    torch.compile  torch.compile of the loop with the input projection hoisted out of it
    oneDNN         oneDNN's fused primitive, vanilla RNN or linear-before-reset GRU, forward and
                   backward (_onednn_rnn.c, through the C API of the onednn-cpu-gomp package)

Before any timing, every peer's forward output is compared once with nn.RNN's / nn.GRU's; a peer
that computes something else is not timed, and the report says by how much it differed.

and two limits, so every row also reads as a share of the hardware: the FMA peak (_fma_peak.c, a
register-only loop of fused multiply-adds) and the rate of one large GEMM (2048³, through the
same oneDNN path as scratchrnn's once-per-layer GEMMs).

A peer whose package is missing is skipped with a note (``pip install 'scratchrnn[bench]'``).
Compile times (jax, torch.compile) are reported apart and never enter a timing.

Each thread count runs in its own subprocess (:func:`child_main`) with its CPU affinity set to that
many CPUs, because XLA's and OpenMP's thread pools are sized once per process.
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from scratchrnn.apps.bench.harness import fmt_ms, interleaved_samples, md_table, spread
from scratchrnn.apps.ours import NO_GRU, gru_class
from scratchrnn.core import accel
from scratchrnn.core.modules import RNN

CELLS = ("rnn", "gru")
GATES = {"rnn": 1, "gru": 3}  # row blocks of W_ih, W_hh: one per gate (r, z, n for the GRU)
REFERENCE = {"rnn": "nn.RNN", "gru": "nn.GRU"}  # the torch.nn module each cell must equal
PEERS = ("scratchrnn", "nn.RNN", "jax", "torch.compile", "oneDNN")
GRU_PEERS = ("scratchrnn", "nn.GRU", "jax", "torch.compile", "oneDNN")
MODES = ("fwd", "fwd+bwd")
# (T, N, D, H): the shapes of issue 11's table
PEER_SHAPES = (
    (100, 32, 64, 128), (50, 64, 256, 512), (500, 16, 32, 64), (1000, 1, 64, 128), (64, 64, 64, 640),
)
QUICK_PEER_SHAPES = ((6, 3, 4, 5),)
COMPILE_MAX_T = 100  # torch.compile unrolls the loop: at T = 500 it compiles for minutes
_HERE = Path(__file__).parent


class PeerUnavailable(Exception):
    """A peer that cannot run here; the message says why (shown in the report)."""


def peers_of(cell: str) -> tuple[str, ...]:
    """The peers timed for ``cell`` ("rnn" or "gru")."""
    return {"rnn": PEERS, "gru": GRU_PEERS}[cell]


def flops(shape: tuple[int, int, int, int], mode: str, cell: str = "rnn") -> int:
    """The GEMM flops of one call: forward 2·T·N·G·H·(D + H) with G gates (1 for the RNN, 3 for
    the GRU); the backward twice that again (dh_next and dW_hh over H, dW_ih and dx over D), so
    forward + backward is 3× the forward."""
    T, N, D, H = shape
    forward = 2 * T * N * GATES[cell] * H * (D + H)
    return forward if mode == "fwd" else 3 * forward


# --------------------------------------------------------------------------------------------
# Small C libraries of the benchmark, built on first use.
# --------------------------------------------------------------------------------------------


def _build(source: str, flags: Sequence[str]) -> ctypes.CDLL:
    """Compile ``_HERE / source`` with ``flags`` into a fresh temporary file and load it."""
    cc = shutil.which((os.environ.get("CC") or "cc").split()[0])
    if cc is None:
        raise PeerUnavailable("no C compiler")
    key = hashlib.sha256((_HERE / source).read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / f"{Path(source).stem}-{key}.so"
        cmd = [cc, "-O3", "-march=native", "-fPIC", "-shared", str(_HERE / source), "-o", str(target), *flags]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PeerUnavailable(f"building {source} failed: {done.stderr.strip().splitlines()[:1]}")
        return ctypes.CDLL(str(target))  # mapped: the file may go


def _fma_library() -> ctypes.CDLL:
    lib = _build("_fma_peak.c", ["-ffp-contract=fast"])
    lib.fma_peak_run.restype = ctypes.c_float
    lib.fma_peak_run.argtypes = [ctypes.c_int64]
    lib.fma_peak_flops.restype = ctypes.c_int64
    lib.fma_peak_flops.argtypes = [ctypes.c_int64]
    return lib


def fma_peak(n_threads: int, rounds: int = 5, seconds: float = 0.2) -> float:
    """The best FLOP/s of ``n_threads`` threads each running the register-only FMA loop."""
    lib = _fma_library()
    iters = 1 << 16
    while True:  # calibrate: one thread's run of about `seconds`
        start = time.perf_counter()
        lib.fma_peak_run(iters)
        if time.perf_counter() - start > seconds / 4:
            break
        iters *= 2
    iters = int(iters * seconds / max(time.perf_counter() - start, 1e-9))
    best = 0.0
    for _ in range(rounds):  # ctypes releases the GIL during the call: the threads run in parallel
        threads = [threading.Thread(target=lib.fma_peak_run, args=(iters,)) for _ in range(n_threads)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, n_threads * lib.fma_peak_flops(iters) / (time.perf_counter() - start))
    return best


def gemm_rate(size: int = 2048, rounds: int = 5) -> float:
    """The best FLOP/s of one (size × size)·(size × size) float32 GEMM through accel.matmul."""
    g = torch.Generator().manual_seed(0)
    A, B = (torch.randn(size, size, generator=g) for _ in range(2))
    accel.matmul(A, B)
    best = min(_seconds(lambda: accel.matmul(A, B)) for _ in range(rounds))
    return 2 * size**3 / best


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# The peers. Each is built from one Weights and offers fwd / fwd+bwd callables.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Weights:
    """One layer's parameters (nn.RNN's or nn.GRU's init, seeded) and an input: what every peer is
    given. G = 1 gate for the tanh RNN, 3 for the GRU (rows in r, z, n order, as nn.GRU's)."""

    x: Tensor  # (T, N, D)
    W_ih: Tensor  # (G·H, D)
    W_hh: Tensor  # (G·H, H)
    b_ih: Tensor  # (G·H,)
    b_hh: Tensor  # (G·H,)
    cell: str = "rnn"

    @classmethod
    def make(cls, shape: tuple[int, int, int, int], seed: int = 0, cell: str = "rnn") -> Weights:
        T, N, D, H = shape
        torch.manual_seed(seed)
        module = torch.nn.GRU(D, H) if cell == "gru" else torch.nn.RNN(D, H)
        params = [getattr(module, name).detach().clone() for name in _STATE_NAMES]
        return cls(torch.randn(T, N, D), *params, cell=cell)

    @property
    def state_dict(self) -> dict[str, Tensor]:
        """The layer's weights under nn.RNN's / nn.GRU's names."""
        return dict(zip(_STATE_NAMES, (self.W_ih, self.W_hh, self.b_ih, self.b_hh), strict=True))


_STATE_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


class TorchModules:
    """Ours (scratchrnn.RNN / scratchrnn.GRU, where built) and nn.RNN / nn.GRU with these weights;
    fwd+bwd is forward, output.sum(), backward."""

    def __init__(self, w: Weights) -> None:
        H, D = w.W_hh.shape[1], w.W_ih.shape[1]
        ours = gru_class() if w.cell == "gru" else RNN
        self.models = {REFERENCE[w.cell]: torch.nn.GRU(D, H) if w.cell == "gru" else torch.nn.RNN(D, H)}
        if ours is not None:
            self.models["scratchrnn"] = ours(D, H)
        for model in self.models.values():
            model.load_state_dict(w.state_dict)
        self.x, self.x_grad = w.x, w.x.clone().requires_grad_()

    def output(self, peer: str) -> Tensor:
        return _no_grad(self.models[peer], self.x)

    def zero_grad(self) -> None:
        for t in (self.x_grad, *(p for m in self.models.values() for p in m.parameters())):
            t.grad = None

    def runner(self, peer: str, mode: str) -> Callable[[], object]:
        model = self.models[peer]
        if mode == "fwd":
            return lambda: _no_grad(model, self.x)
        return lambda: model(self.x_grad)[0].sum().backward()


def _no_grad(model: torch.nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x)[0]


class JaxPeer:
    """jax.lax.scan over the steps, the input projection hoisted; jax.grad of output.sum().

    ``params`` is (W_ih, W_hh, b_ih + b_hh) for the RNN, (W_ih, W_hh, b_ih, b_hh) for the GRU (whose
    b_hn stays inside the reset gate's product)."""

    def __init__(self, w: Weights) -> None:
        if importlib.util.find_spec("jax") is None:
            raise PeerUnavailable("jax not installed")
        import jax
        import jax.numpy as jnp

        self.jax = jax
        tensors = (w.W_ih, w.W_hh, w.b_ih, w.b_hh) if w.cell == "gru" else (w.W_ih, w.W_hh, w.b_ih + w.b_hh)
        self.params = tuple(jnp.asarray(t.numpy()) for t in tensors)
        self.x = jnp.asarray(w.x.numpy())
        h0 = jnp.zeros((w.x.shape[1], w.W_hh.shape[1]), jnp.float32)

        def rnn_forward(params, x):
            W_ih, W_hh, b = params
            a = x @ W_ih.T + b  # (T, N, H): every step's input projection at once

            def step(h_prev, a_t):
                h_t = jnp.tanh(a_t + h_prev @ W_hh.T)
                return h_t, h_t

            return jax.lax.scan(step, h0, a)[1]

        def gru_forward(params, x):
            W_ih, W_hh, b_ih, b_hh = params
            xp = x @ W_ih.T + b_ih  # (T, N, 3H): every step's input projection at once

            def step(h_prev, xp_t):
                xr, xz, xn = jnp.split(xp_t, 3, axis=-1)
                hr, hz, hn = jnp.split(h_prev @ W_hh.T + b_hh, 3, axis=-1)
                r_t, z_t = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
                n_t = jnp.tanh(xn + r_t * hn)
                h_t = (1 - z_t) * n_t + z_t * h_prev
                return h_t, h_t

            return jax.lax.scan(step, h0, xp)[1]

        forward = gru_forward if w.cell == "gru" else rnn_forward

        start = time.perf_counter()
        self.fwd = jax.jit(forward).lower(self.params, self.x).compile()
        grad = jax.grad(lambda p, x: forward(p, x).sum(), argnums=(0, 1))
        self.grad = jax.jit(grad).lower(self.params, self.x).compile()
        self.compile_s = time.perf_counter() - start

    def output(self) -> Tensor:
        return torch.from_numpy(self.jax.device_get(self.fwd(self.params, self.x)).copy())

    def runner(self, mode: str) -> Callable[[], object]:
        if mode == "fwd":
            return lambda: self.fwd(self.params, self.x).block_until_ready()
        return lambda: self.jax.block_until_ready(self.grad(self.params, self.x))


def hoisted_loop(x: Tensor, h0: Tensor, W_ih: Tensor, W_hh: Tensor, b: Tensor) -> Tensor:
    """The RNN as a user writes it for torch.compile: the input projection hoisted, then the steps."""
    T, N, _ = x.shape
    a = torch.addmm(b, x.reshape(T * N, -1), W_ih.t()).view(T, N, -1)  # every step's x_t W_ihᵀ + b
    h, outs = h0, []
    for t in range(T):
        h = torch.tanh(torch.addmm(a[t], h, W_hh.t()))
        outs.append(h)
    return torch.stack(outs)


def hoisted_gru_loop(x: Tensor, h0: Tensor, W_ih: Tensor, W_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> Tensor:
    """The GRU as a user writes it for torch.compile: the input projection hoisted, then the steps
    (nn.GRU's equations, gates in r, z, n order)."""
    T, N, _ = x.shape
    xp = torch.addmm(b_ih, x.reshape(T * N, -1), W_ih.t()).view(T, N, -1)  # every step's x_t W_ihᵀ + b_ih
    h, outs = h0, []
    for t in range(T):
        xr, xz, xn = xp[t].chunk(3, dim=1)
        hr, hz, hn = torch.addmm(b_hh, h, W_hh.t()).chunk(3, dim=1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        outs.append(h)
    return torch.stack(outs)


class CompiledPeer:
    """torch.compile of :func:`hoisted_loop`; the first call of each mode (the compile) is timed apart."""

    def __init__(self, w: Weights) -> None:
        T = w.x.shape[0]
        if T > COMPILE_MAX_T:
            raise PeerUnavailable(f"T = {T} > {COMPILE_MAX_T}: the unrolled loop takes minutes to compile")
        self.fn = torch.compile(hoisted_gru_loop if w.cell == "gru" else hoisted_loop, dynamic=False)
        self.h0 = w.x.new_zeros(w.x.shape[1], w.W_hh.shape[1])
        biases = (w.b_ih, w.b_hh) if w.cell == "gru" else (w.b_ih + w.b_hh,)
        self.args = (w.x, self.h0, w.W_ih, w.W_hh, *biases)
        self.grad_args = [t.clone().requires_grad_() for t in self.args]
        start = time.perf_counter()
        for mode in MODES:
            self.runner(mode)()
        self.compile_s = time.perf_counter() - start

    def zero_grad(self) -> None:
        for t in self.grad_args:
            t.grad = None

    def output(self) -> Tensor:
        return _no_grad_call(self.fn, self.args)

    def runner(self, mode: str) -> Callable[[], object]:
        if mode == "fwd":
            return lambda: _no_grad_call(self.fn, self.args)
        return lambda: self.fn(*self.grad_args).sum().backward()


def _no_grad_call(fn: Callable[..., Tensor], args: Sequence[Tensor]) -> Tensor:
    with torch.no_grad():
        return fn(*args)


def _onednn_paths() -> tuple[Path, Path]:
    """libdnnl's folder and the folder holding oneapi/dnnl/dnnl.h, from the pip packages."""
    try:
        lib = [f for f in importlib.metadata.files("onednn-cpu-gomp") or () if f.name == "libdnnl.so"]
        inc = [f for f in importlib.metadata.files("onednn-devel-cpu-gomp") or () if f.name == "dnnl.h"
               and f.parent.name == "dnnl"]
    except importlib.metadata.PackageNotFoundError as err:
        raise PeerUnavailable(f"{err.name} not installed") from None
    if not lib or not inc:
        raise PeerUnavailable("onednn-cpu-gomp / onednn-devel-cpu-gomp hold no libdnnl.so / dnnl.h")
    return Path(lib[0].locate()).resolve().parent, Path(inc[0].locate()).resolve().parent.parent.parent


_BUFFERS = (  # the order of the enum in _onednn_rnn.c
    "x", "h0", "Wx", "Wh", "b", "y", "h_n", "Wx_T", "Wh_T", "dy", "dh_n", "dx", "dh0", "dWx", "dWh", "db",
)


def _gates_to_onednn(t: Tensor) -> Tensor:
    """nn.GRU's gate blocks (r, z, n, along dim 0) in oneDNN's order (z, r, n); its own inverse."""
    r, z, n = t.chunk(3)
    return torch.cat([z, r, n])


class OneDnnPeer:
    """oneDNN's vanilla-RNN or linear-before-reset-GRU primitive over torch buffers (layouts in
    _onednn_rnn.c): the GRU's weights go in with their gates reordered, its biases as oneDNN's
    four (b_z, b_r summed over ih and hh; b_in, b_hn apart), and the gradients come back in
    nn.GRU's layout."""

    _lib: ctypes.CDLL | None = None

    def __init__(self, w: Weights, n_threads: int) -> None:
        lib = self._library()
        lib.onednn_rnn_set_threads(n_threads)
        T, N, D = w.x.shape
        H = w.W_hh.shape[1]
        G = GATES[w.cell]
        self.cell = w.cell
        if w.cell == "gru":
            W_ih, W_hh = _gates_to_onednn(w.W_ih), _gates_to_onednn(w.W_hh)
            b_r, b_z = (w.b_ih[:2 * H] + w.b_hh[:2 * H]).chunk(2)
            b = torch.cat([b_z, b_r, w.b_ih[2 * H:], w.b_hh[2 * H:]])  # (4H,)
        else:
            W_ih, W_hh, b = w.W_ih, w.W_hh, w.b_ih + w.b_hh
        self.buffers = {
            "x": w.x.contiguous(), "h0": w.x.new_zeros(N, H),
            "Wx": W_ih.t().contiguous(), "Wh": W_hh.t().contiguous(),  # ldigo: Wᵀ
            "b": b.contiguous(), "y": w.x.new_empty(T, N, H), "h_n": w.x.new_empty(N, H),
            "Wx_T": W_ih.contiguous(), "Wh_T": W_hh.contiguous(),  # ldgoi: W, for the backward
            "dy": w.x.new_ones(T, N, H), "dh_n": w.x.new_zeros(N, H),  # ∂(output.sum())
            "dx": torch.empty_like(w.x), "dh0": w.x.new_empty(N, H),
            "dWx": w.x.new_empty(D, G * H), "dWh": w.x.new_empty(H, G * H), "db": torch.empty_like(b),
        }
        pointers = (ctypes.c_void_p * len(_BUFFERS))(*(self.buffers[k].data_ptr() for k in _BUFFERS))
        self.handle = ctypes.c_void_p()
        cell_id = {"rnn": 0, "gru": 1}[w.cell]  # the cell enum of _onednn_rnn.c
        status = lib.onednn_rnn_create(ctypes.byref(self.handle), cell_id, T, N, D, H, pointers)
        if status != 0:
            raise PeerUnavailable(f"oneDNN refused the primitive (dnnl_status_t {status})")
        self.lib = lib

    @classmethod
    def _library(cls) -> ctypes.CDLL:
        if cls._lib is None:
            lib_dir, include = _onednn_paths()
            flags = [f"-I{include}", f"-L{lib_dir}", "-ldnnl", "-lgomp", f"-Wl,-rpath,{lib_dir}"]
            cls._lib = _build("_onednn_rnn.c", flags)
        return cls._lib

    def _check(self, status: int) -> None:
        if status != 0:
            raise RuntimeError(f"oneDNN execution failed (dnnl_status_t {status})")

    def forward(self, training: bool = False) -> Tensor:
        self._check(self.lib.onednn_rnn_forward(self.handle, int(training)))
        return self.buffers["y"]

    def output(self) -> Tensor:
        return self.forward().clone()

    def forward_backward(self) -> dict[str, Tensor]:
        """dx, dh0 and the weight gradients of output.sum(), in nn.RNN's layouts (db = ∂b_ih = ∂b_hh)
        or nn.GRU's (W in r, z, n order; db_ih and db_hh, equal but in the n gate)."""
        self.forward(training=True)
        self._check(self.lib.onednn_rnn_backward(self.handle))
        b = self.buffers
        grads = {"dx": b["dx"], "dh0": b["dh0"], "dW_ih": b["dWx"].t(), "dW_hh": b["dWh"].t(), "db": b["db"]}
        if self.cell == "gru":
            db_z, db_r, db_in, db_hn = b["db"].chunk(4)
            grads |= {"dW_ih": _gates_to_onednn(grads["dW_ih"]), "dW_hh": _gates_to_onednn(grads["dW_hh"]),
                      "db_ih": torch.cat([db_r, db_z, db_in]), "db_hh": torch.cat([db_r, db_z, db_hn])}
            del grads["db"]
        return grads

    def runner(self, mode: str) -> Callable[[], object]:
        return self.forward if mode == "fwd" else self.forward_backward


# --------------------------------------------------------------------------------------------
# One thread count, in a child process.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PeerCell:
    """One shape's peers: their callables per mode, compile times and why a peer is missing."""

    shape: tuple[int, int, int, int]
    runners: dict[tuple[str, str], Callable[[], object]] = dataclasses.field(default_factory=dict)
    setup: dict[tuple[str, str], Callable[[], object]] = dataclasses.field(default_factory=dict)
    compile_s: dict[str, float] = dataclasses.field(default_factory=dict)
    missing: dict[str, str] = dataclasses.field(default_factory=dict)


PEER_TOL = {"rtol": 1e-4, "atol": 1e-5}  # float32 outputs, summed in different orders


def build_cell(shape: tuple[int, int, int, int], peers: Sequence[str], n_threads: int,
               cell_kind: str = "rnn") -> PeerCell:
    """Every peer of ``peers`` at ``shape`` for the cell ``cell_kind``, each checked once against
    nn.RNN's / nn.GRU's output (a peer that differs is reported, not timed)."""
    w = Weights.make(shape, cell=cell_kind)
    cell = PeerCell(shape)
    modules = TorchModules(w)
    reference = REFERENCE[cell_kind]
    expected = modules.output(reference)
    for peer in peers:
        try:
            if peer in ("scratchrnn", "nn.RNN", "nn.GRU"):
                if peer not in modules.models:
                    raise PeerUnavailable(NO_GRU if cell_kind == "gru" else f"no {peer} for {cell_kind}")
                built, zero_grad = modules, modules.zero_grad
            elif peer == "jax":
                built = JaxPeer(w)
                cell.compile_s[peer], zero_grad = built.compile_s, None
            elif peer == "torch.compile":
                built = CompiledPeer(w)
                cell.compile_s[peer], zero_grad = built.compile_s, built.zero_grad
            else:
                built, zero_grad = OneDnnPeer(w, n_threads), None
        except PeerUnavailable as err:
            cell.missing[peer] = str(err)
            continue
        got = built.output(peer) if isinstance(built, TorchModules) else built.output()
        try:
            torch.testing.assert_close(got, expected, **PEER_TOL)
        except AssertionError:
            diff = (got - expected).abs().max().item() if got.shape == expected.shape else float("nan")
            cell.missing[peer] = f"output differs from {reference}'s (max |difference| {diff:.2e}): not timed"
            continue
        for mode in MODES:
            fn = built.runner(peer, mode) if isinstance(built, TorchModules) else built.runner(mode)
            cell.runners[peer, mode] = fn
            if zero_grad is not None and mode == "fwd+bwd":
                cell.setup[peer, mode] = zero_grad
    return cell


def _pin(n_threads: int) -> None:
    """This process on ``n_threads`` CPUs: torch, OpenMP (oneDNN) and XLA size their pools by it."""
    if hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[:n_threads])
    torch.set_num_threads(n_threads)


def run_one_thread_count(n_threads: int, shapes: Sequence[tuple[int, int, int, int]], peers: Sequence[str],
                         rounds: int, cell_kind: str = "rnn") -> dict:
    """Everything for one thread count: peak, GEMM rate, and every peer's samples (JSON-able)."""
    _pin(n_threads)
    cells = [build_cell(shape, peers, n_threads, cell_kind) for shape in shapes]
    groups = [{(i, *key): fn for key, fn in cell.runners.items() if key[1] == mode}
              for i, cell in enumerate(cells) for mode in MODES]
    setup = {(i, *key): fn for i, cell in enumerate(cells) for key, fn in cell.setup.items()}
    samples = interleaved_samples(groups, rounds, setup=setup, min_sample_s=0.02, max_reps=20)
    return {
        "threads": n_threads,
        "cell": cell_kind,
        "fma_peak": fma_peak(n_threads),
        "gemm_rate": gemm_rate(),
        "cells": [
            {
                "shape": list(cell.shape), "compile_s": cell.compile_s, "missing": cell.missing,
                "samples": {f"{peer}|{mode}": samples[i, peer, mode] for peer, mode in cell.runners},
            }
            for i, cell in enumerate(cells)
        ],
    }


def child_main(argv: Sequence[str]) -> None:
    """The child's entry: ``threads rounds peers shapes-json [cell]``; prints one JSON line."""
    n_threads, rounds, peers, shapes = int(argv[0]), int(argv[1]), argv[2].split(","), json.loads(argv[3])
    cell_kind = argv[4] if len(argv) > 4 else "rnn"
    result = run_one_thread_count(n_threads, [tuple(s) for s in shapes], peers, rounds, cell_kind)
    sys.stdout.write(json.dumps(result) + "\n")


def measure(threads: Sequence[int], shapes: Sequence[tuple[int, int, int, int]], peers: Sequence[str],
            rounds: int, progress: Callable[[str], None] | None = None, cell: str = "rnn") -> list[dict]:
    """:func:`run_one_thread_count` for each thread count, each in a fresh subprocess."""
    results = []
    for n in threads:
        if progress:
            progress(f"bench: {cell} peers with {n} thread(s), in a subprocess")
        env = dict(os.environ, OMP_NUM_THREADS=str(n),
                   XLA_FLAGS=f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'}")
        code = "import sys; from scratchrnn.apps.bench.peers import child_main; child_main(sys.argv[1:])"
        done = subprocess.run(
            [sys.executable, "-c", code, str(n), str(rounds), ",".join(peers), json.dumps(shapes), cell],
            capture_output=True, text=True, env=env, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the peer benchmark with {n} thread(s) failed:\n{done.stderr.strip()}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


# --------------------------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------------------------


def _medians(cell: dict, mode: str) -> dict[str, float]:
    return {key.split("|")[0]: statistics.median(v) for key, v in cell["samples"].items()
            if key.endswith("|" + mode)}


def peer_table(results: Sequence[dict], peers: Sequence[str]) -> str:
    """ms per call of every peer, the fastest other peer against ours, and ours as % of peak."""
    head = ["threads", "shape (T, N, D, H)", "mode", *(f"{p} ms" for p in peers), "best other / ours",
            "ours GFLOP/s", "ours % of FMA peak", "spread"]
    rows = []
    for result in results:
        for mode in MODES:
            for cell in result["cells"]:
                m = _medians(cell, mode)
                others = {p: t for p, t in m.items() if p != "scratchrnn"}
                best = min(others, key=others.get) if others else None
                ours = m.get("scratchrnn")
                rate = flops(tuple(cell["shape"]), mode, result.get("cell", "rnn")) / ours if ours else None
                worst_spread = max(spread(v) for k, v in cell["samples"].items() if k.endswith("|" + mode))
                rows.append([
                    str(result["threads"]), str(tuple(cell["shape"])), mode,
                    *(fmt_ms(m[p]) if p in m else "–" for p in peers),
                    f"{others[best] / ours:.2f}× ({best})" if best and ours else "–",
                    f"{rate / 1e9:.0f}" if rate else "–",
                    f"{rate / result['fma_peak']:.0%}" if rate else "–",
                    f"{worst_spread:.0%}",
                ])
    return md_table(head, rows)


def limits_table(results: Sequence[dict]) -> str:
    rows = [[str(r["threads"]), f"{r['fma_peak'] / 1e9:.0f}", f"{r['gemm_rate'] / 1e9:.0f}",
             f"{r['gemm_rate'] / r['fma_peak']:.0%}"] for r in results]
    return md_table(["threads", "FMA peak GFLOP/s", "2048³ GEMM GFLOP/s", "GEMM / peak"], rows)


def compile_and_missing(results: Sequence[dict]) -> str:
    """Compile times (seconds, per shape) and the peers that did not run, with why."""
    lines = []
    for cell in results[0]["cells"]:
        if cell["compile_s"]:
            times = ", ".join(f"{p} {s:.1f} s" for p, s in cell["compile_s"].items())
            lines.append(f"- compile at {tuple(cell['shape'])}: {times}")
    notes = {(p, why) for r in results for c in r["cells"] for p, why in c["missing"].items()}
    lines += [f"- not run: {p}: {why}" for p, why in sorted(notes)]
    return "\n".join(lines)


PEER_METHOD = """\
**Peers.** One tanh layer, float32, the same weights (nn.RNN's init, seeded) and input for all.
`scratchrnn`: `scratchrnn.RNN`. `nn.RNN`: `torch.nn.RNN`. `jax`: `jax.lax.scan` of the step
(input projection hoisted) under `jax.jit`, and `jax.grad` of `output.sum()` under `jit`
(forward + backward in one call). `torch.compile`: `torch.compile(dynamic=False)` of the loop
with the input projection hoisted (`hoisted_loop`; T ≤ 100 only: it unrolls). `oneDNN`: oneDNN
3.2's fused vanilla-RNN primitive through its C API (forward inference; forward training +
backward, the weight gradients zeroed before each call as it accumulates into them). fwd+bwd
is forward, `output.sum()`, backward, the input requiring grad. Compile times are apart.
Every peer's output is checked once against nn.RNN's before it is timed.
Each thread count runs in its own process pinned to that many CPUs (`sched_setaffinity`;
`torch.set_num_threads`, `OMP_NUM_THREADS`, XLA's Eigen pool single-threaded for 1).
**Limits.** FMA peak: n threads each running a register-only loop of 16 independent
AVX-512 FMA chains (`_fma_peak.c`), best of 5. GEMM: a 2048³ float32 product through oneDNN,
best of 5. GFLOP/s counts the GEMM flops only: forward 2·T·N·H·(D + H), forward + backward 3×."""

GRU_PEER_METHOD = """\
**GRU peers.** As above, one GRU layer (nn.GRU's equations and init: gates r, z, n; the reset
gate applied after the recurrent product, `n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))`).
`scratchrnn`: `scratchrnn.GRU`. `nn.GRU`: `torch.nn.GRU`. `jax`: `jax.lax.scan` of the GRU step,
the input projection `x W_ihᵀ + b_ih` hoisted, under `jax.jit` (and `jax.grad`). `torch.compile`:
the same loop in torch (`hoisted_gru_loop`). `oneDNN`: the linear-before-reset GRU primitive
(`dnnl_lbr_gru`, which is nn.GRU's function; `dnnl_vanilla_gru` resets before the product),
gates reordered to oneDNN's z, r, n and its four biases (b_z, b_r, b_in, b_hn). Every peer's
output is checked once against nn.GRU's before it is timed. GFLOP/s: forward 2·T·N·3H·(D + H)."""


def peer_checks(results: Sequence[dict], min_ratio: float = 1.0) -> list[tuple[str, str, bool | None]]:
    """Issue 11's goal per thread count and mode: ahead of every peer at every shape (min other /
    ours ≥ ``min_ratio``)."""
    checks = []
    for result in results:
        for mode in MODES:
            worst: tuple[float, str, tuple] | None = None
            for cell in result["cells"]:
                m = _medians(cell, mode)
                for peer, t in m.items():
                    if peer != "scratchrnn" and "scratchrnn" in m:
                        ratio = t / m["scratchrnn"]
                        if worst is None or ratio < worst[0]:
                            worst = (ratio, peer, tuple(cell["shape"]))
            target = (f"{mode}, {result['threads']} thread(s): ahead of every peer at every shape "
                      f"(min other / ours ≥ {min_ratio:g})")
            if worst is None:
                checks.append((target, "no peer ran", None))
            else:
                checks.append((target, f"{worst[0]:.2f}× ({worst[1]} at {worst[2]})", worst[0] >= min_ratio))
    return checks
