"""``torch.autocast`` around our modules (issue 21): the same output dtypes as nn.RNN and
nn.RNNCell under the same autocast (bfloat16 and float16 on the CPU; CUDA the same way where
there is one), gradients reaching float32 parameters as float32, a float32 model fed an autocast
tensor from the layer in front, and values as close to float64 as nn.RNN's."""

from __future__ import annotations

import pytest
import torch
from helpers import F64, max_abs
from torch import nn

import scratchrnn

pytestmark = pytest.mark.usefixtures("one_thread")

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Worst |ours − float64 oracle| allowed, relative to the same error of nn.RNN under autocast
# (both round every GEMM's inputs and every state to 8 or 11 bits, in different orders).
TIMES_TORCH_ERROR = 3.0

CASES = {
    "padded_L2": (lambda c: c.RNN(3, 8, num_layers=2), (6, 2, 3), False),
    "batch_first_bi": (lambda c: c.RNN(3, 8, batch_first=True, bidirectional=True), (2, 6, 3), False),
    "relu_no_bias": (lambda c: c.RNN(3, 8, nonlinearity="relu", bias=False), (6, 2, 3), False),
    "packed": (lambda c: c.RNN(3, 8, num_layers=2), (6, 3, 3), True),
    "cell": (lambda c: c.RNNCell(3, 8), (2, 3), False),
}


def _out(result):
    """The output tensor and every tensor returned, for either module kind."""
    if isinstance(result, tuple):
        out, h_n = result
        out = out.data if isinstance(out, nn.utils.rnn.PackedSequence) else out
        return out, [out, h_n]
    return result, [result]


def _run(module, x, packed, device, dtype):
    x = x.detach().to(device).requires_grad_()
    with torch.autocast(device, dtype=dtype):
        inp = nn.utils.rnn.pack_padded_sequence(x, [6, 4, 1]) if packed else x
        out, returned = _out(module(inp))
    out.double().sin().sum().backward()
    return returned, x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("input_dtype", ["float32", "autocast"], ids=["x_float32", "x_in_autocast_dtype"])
def test_autocast_like_nn_rnn(case, dtype, device, input_dtype):
    build, shape, packed = CASES[case]
    torch.manual_seed(0)
    theirs = build(nn).to(device)
    ours = (scratchrnn.RNNCell if case == "cell" else scratchrnn.RNN).from_torch(theirs)
    oracle = (scratchrnn.RNNCell if case == "cell" else scratchrnn.RNN).from_torch(theirs).double()
    x = torch.randn(*shape, device=device)
    x_in = x.to(DTYPES[dtype]) if input_dtype == "autocast" else x
    got_t, dx_t, dw_t = _run(theirs, x_in, packed, device, DTYPES[dtype])
    got_o, dx_o, dw_o = _run(ours, x_in, packed, device, DTYPES[dtype])
    assert [t.dtype for t in got_o] == [t.dtype for t in got_t] == [DTYPES[dtype]] * len(got_t)
    assert dx_o.dtype == dx_t.dtype == x_in.dtype
    assert [g.dtype for g in dw_o] == [g.dtype for g in dw_t] == [torch.float32] * len(dw_t)
    # Values: ours as close to the float64 oracle (fed the same rounded input) as nn.RNN's.
    want, _, _ = _run(oracle, x_in.double(), packed, device, DTYPES[dtype])
    for o, t, w in zip(got_o, got_t, want, strict=True):
        assert max_abs(o.double(), w) <= TIMES_TORCH_ERROR * max(max_abs(t.double(), w), 1e-4)


def test_float32_model_behind_an_autocast_embedding():
    # What the word-language-model client does: Embedding → RNN → Linear, all float32, under
    # autocast; the RNN receives the embedding's float32 output or, after a lower-precision
    # layer, a bfloat16 tensor, and its hidden state from the previous batch in bfloat16.
    torch.manual_seed(0)
    encoder, rnn, decoder = nn.Embedding(11, 4), scratchrnn.RNN(4, 8, 2), nn.Linear(8, 11)
    proj = nn.Linear(4, 4)
    ids = torch.randint(11, (6, 2))
    hidden = None
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = proj(encoder(ids))  # bfloat16: Linear runs in lower precision
            assert x.dtype == torch.bfloat16
            out, hidden = rnn(x, hidden)
            loss = nn.functional.cross_entropy(decoder(out).flatten(0, 1).float(), ids.flatten())
        loss.backward()
        hidden = hidden.detach()
        assert hidden.dtype == torch.bfloat16
    assert all(p.grad.dtype == torch.float32 and p.grad.isfinite().all() for p in rnn.parameters())


def test_float64_stays_float64_under_autocast():
    rnn = scratchrnn.RNN(3, 4).double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = rnn(torch.randn(5, 2, 3, dtype=F64))
    assert out.dtype == h_n.dtype == F64


def test_mixed_dtypes_still_refused_outside_autocast():
    with pytest.raises(ValueError, match="input dtype"):
        scratchrnn.RNN(3, 4)(torch.randn(5, 2, 3, dtype=torch.bfloat16))


def test_autocast_under_torch_compile():
    torch.manual_seed(0)
    rnn = scratchrnn.RNN(3, 4, 2)
    x = torch.randn(5, 2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _ = rnn(x)
        got, _ = torch.compile(rnn, backend="aot_eager", fullgraph=True)(x)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


@pytest.mark.filterwarnings("ignore:The tensor attributes self._flat_weights:UserWarning")  # nn.RNN's export
@pytest.mark.parametrize("dtype", DTYPES)
def test_exported_program_under_autocast_like_nn_rnn(dtype):
    # An exported program calls torch.ops.scratchrnn.rnn itself (not the module's wrapper): the
    # operator's own autocast rule gives nn.RNN's dtypes there too, and the same values as eager.
    torch.manual_seed(0)
    theirs = nn.RNN(3, 8, 2)
    ours = scratchrnn.RNN.from_torch(theirs)
    x = torch.randn(6, 2, 3)
    programs = [torch.export.export(m, (x,)).module() for m in (theirs, ours)]
    with torch.autocast("cpu", dtype=DTYPES[dtype]):
        (out_t, h_t), (out_o, h_o) = (p(x) for p in programs)
        eager, _ = ours(x)
    assert out_o.dtype == h_o.dtype == out_t.dtype == h_t.dtype == DTYPES[dtype]
    assert torch.equal(out_o, eager)
