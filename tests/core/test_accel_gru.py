"""The GRU's C steps (cells/gru.c through accel.gru_forward_steps and
accel.gru_backward_recompute_steps, whose backward recomputes the gates from xp and hp and writes
dxp and dhp in their place) against a PyTorch loop of the same steps written here (autograd
through it; dxp and dhp also against the Python cell's step_backward), and against torch.nn.GRU
fed the input projection xp = x W_ihᵀ + b_ih from its own weights: outputs, h_n and every
gradient (the weight gradients built from dxp and dhp as the Python GRU cell builds them), in
float32 and float64, padded and packed, with and without bias, both directions; NaN and ±inf
propagated as torch does; the refusals of the Python door and of the C entry points themselves."""

import ctypes

import pytest
import torch
from torch import Tensor
from torch.nn.utils.rnn import pack_sequence

from scratchrnn.core import accel
from scratchrnn.core.cells.gru import GRU, _gates

pytestmark = pytest.mark.skipif(not accel.available(), reason="no C compiler or BLAS here")


def _reference_forward(xp, h0, W_hh, b_hh, batch_sizes, reverse, steps_too=False):
    """The GRU step loop in PyTorch ops (autograd-friendly): out (rows, H), h_n (N, H), and with
    ``steps_too`` each step's h_t as computed (the tensors the rest of the loop reads)."""
    sizes = list(batch_sizes)
    steps = xp.split(sizes)
    order = list(reversed(range(len(sizes)))) if reverse else list(range(len(sizes)))
    h_prev = h0[: sizes[order[0]]]
    outs, h_n = [None] * len(sizes), list(h0.unbind(0))
    for t in order:
        b, b_prev = sizes[t], h_prev.shape[0]
        for r in range(b, b_prev):  # forward, packed: rows that ended at the step before
            h_n[r] = h_prev[r]
        h = h_prev[:b] if b <= b_prev else torch.cat([h_prev, h0[b_prev:b]])  # reverse: rows from h0
        hp = h @ W_hh.t() + (0 if b_hh is None else b_hh)
        x_r, x_z, x_n = steps[t].chunk(3, 1)
        h_r, h_z, h_n_gate = hp.chunk(3, 1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n_gate)
        outs[t] = h_prev = n + z * (h - n)
    for r in range(h_prev.shape[0]):
        h_n[r] = h_prev[r]
    return (torch.cat(outs), torch.stack(h_n)) + ((outs,) if steps_too else ())


def _h_prev_rows(out, h0, batch_sizes, reverse):
    """h_{t-1} for every row, in out's flattened layout."""
    sizes, steps, pieces = list(batch_sizes), out.split(list(batch_sizes)), []
    for t, b in enumerate(sizes):
        t_prev = t + 1 if reverse else t - 1
        carried = min(b, sizes[t_prev]) if 0 <= t_prev < len(sizes) else 0
        if carried:
            pieces.append(steps[t_prev][:carried])
        pieces.append(h0[carried:b])
    return torch.cat(pieces)


def _with_dh_n(dout, dh_n, batch_sizes, reverse):
    """dL/dh_t with dL/dh_n added at each sequence's last step (the last one processed)."""
    dh = dout.clone(memory_format=torch.contiguous_format)
    sizes = list(batch_sizes)
    steps = dh.split(sizes)
    order = list(reversed(range(len(sizes)))) if reverse else list(range(len(sizes)))
    for k, t in enumerate(order):
        b_next = sizes[order[k + 1]] if k + 1 < len(order) else 0
        if b_next < sizes[t]:
            steps[t][b_next:] += dh_n[b_next : sizes[t]]
    return dh


def _c_forward(xp, h0, W_hh, b_hh, batch_sizes, reverse, out=None):
    rows, H = xp.shape[0], h0.shape[1]
    out = torch.empty(rows, H, dtype=xp.dtype) if out is None else out
    h_n = torch.empty_like(h0)
    accel.gru_forward_steps(xp, h0, W_hh, b_hh, batch_sizes, out, h_n, reverse)
    return out, h_n


def _hp_rows(out, h0, W_hh, b_hh, batch_sizes, reverse):
    """hp = h_{t-1} W_hhᵀ + b_hh of every row (rows, 3H), contiguous."""
    hp = _h_prev_rows(out, h0, batch_sizes, reverse) @ W_hh.t()
    return (hp if b_hh is None else hp + b_hh).contiguous()


def _c_backward(dh, out, h0, W_hh, xp, b_hh, batch_sizes, reverse):
    """dxp, dhp, dh0 from the C backward, handed copies of xp and of hp (made here) to overwrite."""
    xp = xp.clone(memory_format=torch.contiguous_format)
    hp = _hp_rows(out, h0, W_hh, b_hh, batch_sizes, reverse)
    dh0 = torch.empty_like(h0)
    accel.gru_backward_recompute_steps(dh, out, h0, W_hh, xp, hp, batch_sizes, dh0, reverse)
    return xp, hp, dh0


def _tol(dtype):
    return {"atol": 1e-10, "rtol": 0} if dtype == torch.float64 else {"atol": 2e-5, "rtol": 1e-4}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_c_gru_steps_match_the_pytorch_step_loop(dtype, packed, bias, reverse):
    """Forward, and the backward (gates recomputed from xp and hp) against autograd through the
    same steps: dxp, dh0, dW_hh and db_hh; dxp and dhp row by row against the Python cell's
    step_backward fed the complete dL/dh_t that autograd gives for each step's h_t."""
    H = 5
    batch_sizes = [6, 5, 5, 3, 1, 1] if packed else [4] * 6
    N, rows = batch_sizes[0], sum(batch_sizes)
    g = torch.Generator().manual_seed(0)
    xp, h0, W_hh = (torch.randn(s, generator=g, dtype=dtype, requires_grad=True)
                    for s in ((rows, 3 * H), (N, H), (3 * H, H)))
    b_hh = torch.randn(3 * H, generator=g, dtype=dtype, requires_grad=True) if bias else None
    values = [xp.detach(), h0.detach(), W_hh.detach(), None if b_hh is None else b_hh.detach()]
    out, h_n = _c_forward(*values, batch_sizes, reverse)
    ref_out, ref_h_n, ref_steps = _reference_forward(xp, h0, W_hh, b_hh, batch_sizes, reverse, steps_too=True)
    torch.testing.assert_close(out, ref_out.detach(), **_tol(dtype))
    torch.testing.assert_close(h_n, ref_h_n.detach(), **_tol(dtype))

    dout = torch.randn(rows, H, generator=g, dtype=dtype)
    dh_n = torch.randn(N, H, generator=g, dtype=dtype)
    leaves = [xp, h0, W_hh] + ([b_hh] if bias else [])
    expected = torch.autograd.grad((ref_out * dout).sum() + (ref_h_n * dh_n).sum(), leaves + ref_steps)
    expected, dh_total = expected[: len(leaves)], torch.cat(expected[len(leaves) :])  # dL/dh_t complete
    dh = _with_dh_n(dout, dh_n, batch_sizes, reverse)
    dxp, dhp, dh0 = _c_backward(dh, out, values[1], values[2], values[0], values[3], batch_sizes, reverse)
    h_prev = _h_prev_rows(out, values[1], batch_sizes, reverse)
    dW_hh = dhp.t() @ h_prev  # Σ dhpᵀ h_{t-1}
    got = [dxp, dh0, dW_hh] + ([dhp.sum(0)] if bias else [])
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **_tol(dtype))

    hp = _hp_rows(out, values[1], values[2], values[3], batch_sizes, reverse)
    residuals = torch.cat([*_gates(values[0], hp), hp[:, 2 * H :]], 1)  # [r, z, n, hp_n]
    cell_dxp, cell_dhp, _ = GRU().step_backward(dh_total, residuals, h_prev)
    torch.testing.assert_close(dxp, cell_dxp, **_tol(dtype))
    torch.testing.assert_close(dhp, cell_dhp, **_tol(dtype))


def test_c_gru_backward_refuses_buffers_too_small():
    H, batch_sizes = 3, [2, 2]
    dh, out = torch.zeros(4, H, dtype=torch.float64), torch.zeros(4, H, dtype=torch.float64)
    h0, W_hh = torch.zeros(2, H, dtype=torch.float64), torch.zeros(3 * H, H, dtype=torch.float64)
    xp, hp = torch.zeros(4, 3 * H, dtype=torch.float64), torch.zeros(3, 3 * H, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="hp"):
        accel.gru_backward_recompute_steps(dh, out, h0, W_hh, xp, hp, batch_sizes, h0.clone(), False)


def _ours_and_nn_gru(dtype, H, lengths, packed, D=4):
    """Output, h_n and the gradients of x, h0 and every parameter of a 1-layer bidirectional
    nn.GRU, and the same through the C steps (both directions in one (rows, 2H) output buffer,
    each a column slice of it), for random upstream gradients."""
    torch.manual_seed(0)
    gru = torch.nn.GRU(D, H, bidirectional=True, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    N, T = len(lengths), max(lengths)
    h0 = torch.randn(2, N, H, generator=g, dtype=dtype, requires_grad=True)
    if packed:  # lengths sorted, so nn.GRU's h_n needs no permutation
        seqs = [torch.randn(n, D, generator=g, dtype=dtype) for n in lengths]
        x = pack_sequence(seqs)
        x_flat, batch_sizes = x.data.requires_grad_(), x.batch_sizes.tolist()
        x = torch.nn.utils.rnn.PackedSequence(x_flat, x.batch_sizes)
        output, h_n = gru(x, h0)
        output = output.data
    else:
        x_flat = torch.randn(T * N, D, generator=g, dtype=dtype, requires_grad=True)
        batch_sizes = [N] * T
        output, h_n = gru(x_flat.view(T, N, D), h0)
        output = output.reshape(T * N, 2 * H)
    dout = torch.randn(output.shape, generator=g, dtype=dtype)
    dh_n = torch.randn(h_n.shape, generator=g, dtype=dtype)
    params = list(gru.parameters())
    expected = [output.detach(), h_n.detach(), *torch.autograd.grad(
        (output * dout).sum() + (h_n * dh_n).sum(), [x_flat, h0, *params])]

    x_flat, h0 = x_flat.detach(), h0.detach()
    rows = x_flat.shape[0]
    out = torch.empty(rows, 2 * H, dtype=dtype)
    ours_h_n, grads = [], {"x": torch.zeros_like(x_flat), "h0": torch.empty_like(h0)}
    for d, suffix in enumerate(("", "_reverse")):
        W_ih, W_hh, b_ih, b_hh = (getattr(gru, f"{w}_l0{suffix}").detach()
                                  for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        xp = torch.addmm(b_ih, x_flat, W_ih.t())  # (rows, 3H)
        cols = slice(d * H, (d + 1) * H)
        _, h_n_d = _c_forward(xp, h0[d], W_hh, b_hh, batch_sizes, bool(d), out=out[:, cols])
        ours_h_n.append(h_n_d)
        dh = _with_dh_n(dout[:, cols], dh_n[d], batch_sizes, bool(d))
        dxp, dhp, grads["h0"][d] = _c_backward(dh, out[:, cols], h0[d], W_hh, xp, b_hh, batch_sizes, bool(d))
        grads[f"weight_ih{suffix}"] = dxp.t() @ x_flat  # dW_ih = Σ dxpᵀ x
        grads[f"weight_hh{suffix}"] = dhp.t() @ _h_prev_rows(out[:, cols], h0[d], batch_sizes, bool(d))
        grads[f"bias_ih{suffix}"], grads[f"bias_hh{suffix}"] = dxp.sum(0), dhp.sum(0)
        grads["x"] += dxp @ W_ih  # dx = dxp W_ih
    names = [n.replace("_l0", "") for n, _ in gru.named_parameters()]
    got = [out, torch.stack(ours_h_n), grads["x"], grads["h0"], *(grads[n] for n in names)]
    return got, expected


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("packed", [False, True])
def test_c_gru_steps_match_nn_gru_outputs_and_gradients(dtype, packed):
    got, expected = _ours_and_nn_gru(dtype, 6, [7, 5, 5, 2, 1, 1], packed)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        torch.testing.assert_close(a, b, **_tol(dtype), msg=lambda m, i=i: f"result {i}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("H", [3, 33, 147, 148, 257])
def test_small_kernel_packed_and_blas_products_agree_with_nn_gru(dtype, H):
    """The GRU's products take the small kernel while 3H² <= 256² (H <= 147) and a step has few
    rows, else BLAS (float32: MKL's packed GEMM for the widest steps); step sizes shrinking from 40
    rows to 4 cross from one to the next mid-sequence."""
    lengths = [9] * 4 + [6] * 12 + [3] * 20 + [2] * 4
    got, expected = _ours_and_nn_gru(dtype, H, lengths, packed=True)
    tol = _tol(dtype) if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        torch.testing.assert_close(a, b, **tol, msg=lambda m, i=i: f"result {i}: {m}")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("where", ["xp", "h0", "W_hh", "b_hh"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nan_and_inf_propagate_as_in_the_pytorch_steps(value, where, dtype):
    """σ and tanh in C propagate NaN and saturate at ±inf as torch.sigmoid and torch.tanh do: the
    outputs and gradients have NaN and ±inf where the PyTorch steps have them."""
    H, batch_sizes = 4, [3, 3, 2, 1]
    rows, N = sum(batch_sizes), batch_sizes[0]
    g = torch.Generator().manual_seed(2)
    tensors = {"xp": torch.randn(rows, 3 * H, generator=g, dtype=dtype),
               "h0": torch.randn(N, H, generator=g, dtype=dtype),
               "W_hh": torch.randn(3 * H, H, generator=g, dtype=dtype),
               "b_hh": torch.randn(3 * H, generator=g, dtype=dtype)}
    tensors[where].view(-1)[tensors[where].numel() // 2] = value
    leaves = {k: v.clone().requires_grad_() for k, v in tensors.items()}
    ref_out, ref_h_n = _reference_forward(*leaves.values(), batch_sizes, False)
    dout = torch.randn(rows, H, generator=g, dtype=dtype)
    ref_dxp, ref_dh0 = torch.autograd.grad((ref_out * dout).sum(), [leaves["xp"], leaves["h0"]])
    out, h_n = _c_forward(*tensors.values(), batch_sizes, False)
    dxp, _, dh0 = _c_backward(dout.clone(), out, *(tensors[k] for k in ("h0", "W_hh", "xp", "b_hh")),
                              batch_sizes, False)
    for a, b in ((out, ref_out), (h_n, ref_h_n), (dxp, ref_dxp), (dh0, ref_dh0)):
        b = b.detach()
        for mask in (torch.isnan, torch.isposinf, torch.isneginf):
            assert torch.equal(mask(a), mask(b))
        finite = torch.isfinite(b)
        torch.testing.assert_close(a[finite], b[finite], **_tol(dtype))


def test_c_sigmoid_is_close_to_torch_sigmoid():
    lib = accel._library()
    grid = torch.cat([torch.linspace(-40, 40, 200_001, dtype=torch.float64),
                      torch.tensor([0.0, -0.0, 1e-300, -1e-300, float("nan"), float("inf"), float("-inf")],
                                   dtype=torch.float64)])
    for dtype, fn, tol in ((torch.float32, lib.scratchrnn_sigmoid_f32, {"rtol": 3e-7, "atol": 1e-38}),
                           (torch.float64, lib.scratchrnn_sigmoid_f64, {"rtol": 1e-15, "atol": 1e-300})):
        ours = grid.to(dtype, copy=True)
        fn(ctypes.c_int64(ours.numel()), ctypes.c_void_p(ours.data_ptr()))
        torch.testing.assert_close(ours, torch.sigmoid(grid.to(dtype)), equal_nan=True, **tol)


def _args(H=4, batch_sizes=(3, 2), dtype=torch.float64) -> dict[str, Tensor | list[int] | bool | None]:
    rows, N = sum(batch_sizes), batch_sizes[0]
    return {"xp": torch.randn(rows, 3 * H, dtype=dtype), "h0": torch.randn(N, H, dtype=dtype),
            "W_hh": torch.randn(3 * H, H, dtype=dtype), "b_hh": torch.randn(3 * H, dtype=dtype),
            "batch_sizes": list(batch_sizes), "out": torch.empty(rows, H, dtype=dtype),
            "h_n": torch.empty(N, H, dtype=dtype), "reverse": False}


@pytest.mark.parametrize("change, error", [
    ({"W_hh": torch.randn(4, 1, dtype=torch.float64)}, RuntimeError),  # issue 18's (H, 1) weight
    ({"W_hh": torch.randn(4, 4, dtype=torch.float64)}, RuntimeError),  # an Elman weight for a GRU
    ({"b_hh": torch.randn(4, dtype=torch.float64)}, RuntimeError),
    ({"xp": torch.randn(5, 4, dtype=torch.float64)}, RuntimeError),
    ({"xp": torch.randn(12, 5, dtype=torch.float64).t()}, RuntimeError),  # not contiguous
    ({"h0": torch.randn(3, 4)}, RuntimeError),  # float32 among float64
    ({"h_n": torch.empty(2, 4, dtype=torch.float64)}, RuntimeError),
    ({"out": torch.empty(5, 8, dtype=torch.float64)[:, ::2]}, RuntimeError),  # column stride 2
    ({"out": torch.empty(5, 4, dtype=torch.float64, device="meta")}, RuntimeError),
    ({"batch_sizes": [2, 3]}, ValueError),  # growing
    ({"batch_sizes": [3, 3]}, RuntimeError),  # more rows than xp has
    ({"batch_sizes": []}, ValueError),
])
def test_gru_forward_steps_refuses_what_the_loop_cannot_take(change, error):
    args = {**_args(), **change}
    with pytest.raises(error):
        accel.gru_forward_steps(**args)


def test_the_c_entry_points_refuse_inconsistent_sizes_themselves():
    """Past the door (a caller of the C library itself): each pointer comes with its length, and
    the loop returns an error instead of reading past a buffer or trusting the step sizes."""
    lib, a = accel._library(), _args()
    sizes, offsets, _, _ = accel._steps(a["batch_sizes"])
    fn = lib.scratchrnn_gru_forward_f64

    def call(sizes=sizes, offsets=offsets, W_len=48, T=2):
        return fn(T, accel._ptr(sizes), accel._ptr(offsets), 4, *accel._buf(a["xp"]), *accel._buf(a["h0"]),
                  accel._ptr(a["W_hh"]), W_len, *accel._buf(a["b_hh"]), *accel._buf(a["out"]), 4,
                  *accel._buf(a["h_n"]), 0)

    assert call() == 0
    assert call(W_len=4) == 2  # a (4, 1) weight
    assert call(offsets=torch.tensor([0, 2])) == 1  # the offsets do not add up
    assert call(sizes=torch.tensor([2, 3]), offsets=torch.tensor([0, 2])) == 1  # growing
    assert call(sizes=torch.tensor([3, 3]), offsets=torch.tensor([0, 3])) == 2  # 6 rows, xp has 5
    assert call(T=0) == 1

    back = lib.scratchrnn_gru_backward_recompute_f64  # dh, out, h0, W_hh, xp, hp, dh0 (5 rows, H = 4)
    dh, xp, hp, dh0 = torch.zeros(5, 4, dtype=torch.float64), a["xp"].clone(), torch.zeros(
        5, 12, dtype=torch.float64), torch.empty(3, 4, dtype=torch.float64)

    def call_back(sizes=sizes, offsets=offsets, W_len=48, hp_len=60, T=2):
        return back(T, accel._ptr(sizes), accel._ptr(offsets), 4, *accel._buf(dh), *accel._buf(a["out"]), 4,
                    *accel._buf(a["h0"]), accel._ptr(a["W_hh"]), W_len, *accel._buf(xp), accel._ptr(hp),
                    hp_len, *accel._buf(dh0), 0)

    assert call_back() == 0
    assert call_back(W_len=4) == 2  # a (4, 1) weight
    assert call_back(hp_len=59) == 2  # hp one element short
    assert call_back(offsets=torch.tensor([0, 2])) == 1
    assert call_back(sizes=torch.tensor([2, 3]), offsets=torch.tensor([0, 2])) == 1  # growing
    assert call_back(sizes=torch.tensor([3, 3]), offsets=torch.tensor([0, 3])) == 2  # 6 rows, dh has 5
    assert call_back(T=0) == 1


@pytest.mark.parametrize("H, batch_sizes", [(0, [3, 2]), (4, [0, 0]), (0, [0])])
def test_empty_hidden_size_or_batch_is_a_no_op(H, batch_sizes):
    """H = 0 (GRUCell(n, 0) and RNNCell(n, 0), which torch accepts) and N = 0: nothing to compute,
    and no refusal (the C loop itself takes H >= 1 only)."""
    args = _args(H, tuple(batch_sizes))
    accel.gru_forward_steps(**args)
    dh = torch.randn(args["out"].shape, dtype=torch.float64)
    _c_backward(dh, args["out"], args["h0"], args["W_hh"], args["xp"], args["b_hh"], batch_sizes, False)
    out, h0, W = torch.randn(sum(batch_sizes), H), torch.randn(batch_sizes[0], H), torch.randn(H, H)
    accel.forward_steps(out, h0, W, None, batch_sizes, torch.empty_like(h0), False, False)
    accel.backward_steps(out.clone(), out, W, batch_sizes, torch.empty_like(h0), False, False)
