"""The operators ``torch.ops.scratchrnn.rnn`` / ``rnn_backward`` and what they make possible:
``torch.library.opcheck``, torch.compile (one graph, no breaks), torch.export (save, load, dynamic
shapes). Outputs and gradients equal eager mode's; float64 unless the compiler's float32 is the point.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from functorch.compile import make_boxed_func
from helpers import ABS_TOL_F64, F64, max_abs
from torch import nn
from torch._functorch.aot_autograd import aot_module_simplified
from torch.nn.utils.rnn import pack_padded_sequence

from scratchrnn import GRU, RNN, GRUCell, RNNCell
from scratchrnn.core import ops
from scratchrnn.core.functional import dropout_masks

pytestmark = pytest.mark.usefixtures("one_thread")

D, H = 3, 4
CONFIGS = {
    "L1": {},
    "L2-bi-relu": {"num_layers": 2, "bidirectional": True, "nonlinearity": "relu"},
    "L3-bi-nobias": {"num_layers": 3, "bidirectional": True, "bias": False},
    "L2-bi-gru": {"cell": "gru", "num_layers": 2, "bidirectional": True},
    "L1-gru-nobias": {"cell": "gru", "bias": False},
}


def model(cell: str = "rnn", **kwargs) -> RNN | GRU:
    """Our module of a cell ("rnn" or "gru")."""
    torch.manual_seed(0)
    return (GRU if cell == "gru" else RNN)(D, H, dtype=F64, **kwargs)


def op_args(rnn: RNN, packed: bool, dropout: float = 0.0):
    """Arguments of torch.ops.scratchrnn.rnn for this module, x of T = 4, N = 3."""
    torch.manual_seed(1)
    dirs = 1 + rnn.bidirectional
    if packed:
        packed_x = pack_padded_sequence(torch.randn(4, 3, D, dtype=F64), [4, 2, 1])
        x, batch_sizes = packed_x.data, packed_x.batch_sizes
    else:
        x, batch_sizes = torch.randn(4, 3, D, dtype=F64), None
    hx = torch.randn(rnn.num_layers * dirs, 3, H, dtype=F64)
    masks = dropout_masks(x, dirs * H, rnn.num_layers, dropout)
    weights = [w.detach().clone().requires_grad_() for w in rnn._flat_weights]
    return (x.requires_grad_(), hx.requires_grad_(), weights, masks, batch_sizes,
            rnn.num_layers, rnn.bidirectional, rnn.bias, rnn.mode.lower())


# --------------------------------------------------------------------------------------------
# opcheck: schema, fake implementation, autograd registration, AOT dispatch
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dropout", [0.0, 0.5], ids=["no-dropout", "dropout"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_opcheck_forward(config, packed, dropout, loops):
    torch.library.opcheck(torch.ops.scratchrnn.rnn.default, op_args(model(**config), packed, dropout))


@pytest.mark.parametrize("cell", ["rnn", "gru"])
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_opcheck_backward(packed, need_dx, cell, loops):
    rnn = model(cell, num_layers=2, bidirectional=True)
    args = op_args(rnn, packed, dropout=0.5)
    output, h_n, inner = torch.ops.scratchrnn.rnn(*args)
    x, hx, weights, masks, batch_sizes, *config = args
    torch.manual_seed(2)
    upstream = (torch.randn_like(output), torch.randn_like(h_n), torch.randn_like(inner))
    backward_args = (*upstream, x.detach(), hx.detach(), [w.detach() for w in weights], masks,
                     inner.detach(), output.detach(), batch_sizes, *config, need_dx)
    # The backward operator is not differentiated (a second derivative runs its PyTorch loop).
    torch.library.opcheck(torch.ops.scratchrnn.rnn_backward.default, backward_args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_fake_implementation_touches_no_data():
    rnn = model(num_layers=2, bidirectional=True)
    with torch._subclasses.fake_tensor.FakeTensorMode():
        x = torch.empty(7, 5, D, dtype=F64)
        weights = [torch.empty(w.shape, dtype=F64) for w in rnn._flat_weights]
        output, h_n, inner = torch.ops.scratchrnn.rnn(x, torch.empty(4, 5, H, dtype=F64), weights, [],
                                                     None, 2, True, True, "rnn_tanh")
    assert output.shape == (7, 5, 2 * H) and h_n.shape == (4, 5, H) and len(inner) == 1


# --------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------


class Tagger(nn.Module):
    """A model using scratchrnn.RNN among other layers."""

    def __init__(self, rnn_cls=RNN, cell: str = "rnn", **kwargs) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rnn = (GRU if cell == "gru" else rnn_cls)(D, H, dtype=F64, **kwargs)
        self.out = nn.Linear(H * (1 + self.rnn.bidirectional), 2, dtype=F64)

    def forward(self, x, hx=None):
        output, h_n = self.rnn(x, hx)
        return self.out(output).tanh(), h_n


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_explain_finds_one_graph_and_no_break(config):
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(Tagger(**config))(torch.randn(5, 2, D, dtype=F64))
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


def test_compiled_graph_holds_our_operators():
    captured = []

    def backend(gm, example_inputs):
        def keep(graph, _):
            captured.append(str(graph.graph))
            return make_boxed_func(graph)

        return aot_module_simplified(gm, example_inputs, fw_compiler=keep, bw_compiler=keep)

    torch._dynamo.reset()
    tagger = Tagger(num_layers=2)
    x = torch.randn(5, 2, D, dtype=F64, requires_grad=True)
    torch.compile(tagger, backend=backend, fullgraph=True)(x)[0].sum().backward()
    forward, backward = captured
    assert "scratchrnn.rnn.default" in forward and "scratchrnn.rnn_backward.default" in backward


LAYOUTS = {
    "L2-bi": ({"num_layers": 2, "bidirectional": True}, (5, 2, D)),
    "L2-NTD": ({"num_layers": 2, "batch_first": True}, (2, 5, D)),
    "unbatched": ({}, (5, D)),
    "relu-dropout-eval": ({"num_layers": 2, "nonlinearity": "relu", "dropout": 0.3}, (5, 2, D)),
    "gru-L2-bi": ({"cell": "gru", "num_layers": 2, "bidirectional": True}, (5, 2, D)),
    "gru-unbatched-nobias": ({"cell": "gru", "bias": False}, (5, D)),
}


@pytest.mark.parametrize("config,shape", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_compiled_forward_and_backward_equal_eager(config, shape, diffs):
    # AOT autograd with eager kernels: the graphs, our operators and their autograd wiring;
    # inductor, which only adds code generation for the layers around them, runs in the
    # language model's compiled training step (tests/lm/test_model_transforms.py).
    torch._dynamo.reset()
    results = []
    for compiled in (False, True):
        tagger = Tagger(**config).eval()
        torch.manual_seed(3)
        x = torch.randn(shape, dtype=F64, requires_grad=True)
        run = torch.compile(tagger, backend="aot_eager", fullgraph=True) if compiled else tagger
        y, h_n = run(x)
        (y.pow(2).sum() + h_n.sum()).backward()
        results.append([y, h_n, x.grad, *(p.grad for p in tagger.parameters())])
    worst = max(max_abs(a, b) for a, b in zip(*results, strict=True))
    diffs("float64 max abs, compiled vs eager", worst)
    assert worst <= ABS_TOL_F64


@pytest.mark.parametrize("cell_cls,rnn_cls", [(RNNCell, RNN), (GRUCell, GRU)], ids=["rnn", "gru"])
def test_compiled_cell_and_packed_input_equal_eager(cell_cls, rnn_cls, diffs):
    torch._dynamo.reset()
    torch.manual_seed(0)
    cell, rnn = cell_cls(D, H, dtype=F64), rnn_cls(D, H, 2, dtype=F64)
    x = torch.randn(3, D, dtype=F64)
    packed = pack_padded_sequence(torch.randn(4, 3, D, dtype=F64), [4, 2, 1])
    eager = [cell(x), rnn(packed)[0].data]
    compiled = [torch.compile(cell, backend="aot_eager", fullgraph=True)(x),
                torch.compile(rnn, backend="aot_eager", fullgraph=True)(packed)[0].data]
    worst = max(max_abs(a, b) for a, b in zip(compiled, eager, strict=True))
    diffs("float64 max abs, compiled vs eager", worst)
    assert worst <= ABS_TOL_F64


# --------------------------------------------------------------------------------------------
# torch.export
# --------------------------------------------------------------------------------------------


EXPORTS = {
    "L1": ({}, (5, 2, D), True),
    "L2-bi": ({"num_layers": 2, "bidirectional": True}, (5, 2, D), True),
    "L3-relu": ({"num_layers": 3, "nonlinearity": "relu"}, (5, 2, D), True),
    "L2-bi-NTD": ({"num_layers": 2, "bidirectional": True, "batch_first": True}, (2, 5, D), True),
    "unbatched": ({"num_layers": 2}, (5, D), False),
    "gru-L2-bi-NTD": ({"cell": "gru", "num_layers": 2, "bidirectional": True, "batch_first": True},
                      (2, 5, D), True),
}


@pytest.mark.parametrize("config,shape,with_hx", list(EXPORTS.values()), ids=list(EXPORTS))
def test_export_save_load_run_equals_eager(config, shape, with_hx, tmp_path, diffs):
    tagger = Tagger(**config).eval()
    torch.manual_seed(4)
    x = torch.randn(shape, dtype=F64)
    dirs = 1 + tagger.rnn.bidirectional
    batched = len(shape) == 3
    N = shape[0 if config.get("batch_first") else 1] if batched else None
    hx_shape = (tagger.rnn.num_layers * dirs, N, H) if batched else (tagger.rnn.num_layers * dirs, H)
    hx = torch.randn(hx_shape, dtype=F64)
    args = (x, hx) if with_hx else (x,)
    program = torch.export.export(tagger, args)
    assert "torch.ops.scratchrnn.rnn.default" in program.graph_module.code
    torch.export.save(program, tmp_path / "tagger.pt2")
    loaded = torch.export.load(tmp_path / "tagger.pt2").module()
    worst = max(max_abs(a, b) for a, b in zip(loaded(*args), tagger(*args), strict=True))
    diffs("float64 max abs, exported vs eager", worst)
    assert worst <= ABS_TOL_F64


@pytest.mark.parametrize("cell", ["rnn", "gru"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_export_with_dynamic_sequence_length_and_batch(batch_first, cell, tmp_path, diffs):
    tagger = Tagger(cell=cell, num_layers=2, bidirectional=True, batch_first=batch_first).eval()
    T, N = torch.export.Dim("T", min=1), torch.export.Dim("N", min=1)
    x_dims = {0: N, 1: T} if batch_first else {0: T, 1: N}
    torch.manual_seed(5)
    x = torch.randn((3, 4, D) if batch_first else (4, 3, D), dtype=F64)
    program = torch.export.export(tagger, (x, torch.randn(4, 3, H, dtype=F64)),
                                  dynamic_shapes=(x_dims, {1: N}))
    torch.export.save(program, tmp_path / "tagger.pt2")
    loaded = torch.export.load(tmp_path / "tagger.pt2").module()
    worst = 0.0
    for T_, N_ in ((1, 1), (9, 2), (4, 7)):
        x = torch.randn((N_, T_, D) if batch_first else (T_, N_, D), dtype=F64)
        hx = torch.randn(4, N_, H, dtype=F64)
        worst = max(worst, *(max_abs(a, b) for a, b in zip(loaded(x, hx), tagger(x, hx), strict=True)))
    diffs("float64 max abs, exported vs eager", worst)
    assert worst <= ABS_TOL_F64


def test_rnn_wrapper_is_the_operator_under_compile():
    # Under torch.compile the module calls the operator (register_autograd); in eager the
    # autograd.Function that also carries the forward mode. Both give one node (the output is
    # then copied, so that the caller may change it in place: h_n is the node's own).
    rnn = model()
    x = torch.randn(2, 1, D, dtype=F64, requires_grad=True)
    assert type(rnn(x)[1].grad_fn).__name__ == f"{ops._RNN.__name__}Backward"


def test_dynamo_traces_ours_and_the_library_leaves_its_config_alone():
    # Ours are nn.RNNBase subclasses, not nn.RNN / nn.GRU (which Dynamo refuses unless allow_rnn
    # is set): they compile whole, and importing scratchrnn neither imports Dynamo nor changes how
    # torch.compile treats the user's own RNNs.
    code = (
        "import sys, torch, scratchrnn\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "gru = scratchrnn.GRU(3, 4)\n"
        "x = torch.randn(5, 2, 3)\n"
        "y = torch.compile(gru, backend='eager', fullgraph=True)(x)[0]\n"
        "assert not torch._dynamo.config.allow_rnn and torch.equal(y, gru(x)[0])\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
