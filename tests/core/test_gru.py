"""scratchrnn.GRU and GRUCell against torch.nn.GRU and nn.GRUCell, the oracles they replace; and
the cell as a plug-in seen from the modules (Recurrent, convert, isinstance).

float64, fixed seeds, ≤ 1e-10 max abs difference over the grid (layers, bidirectional,
batch_first, bias, packed, unbatched, T = 1, N = 0), through both loop implementations (the GRU's
C loop where the library has one, else its PyTorch loop twice). Letters: T N D H L.
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
from helpers import max_abs
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import scratchrnn
from scratchrnn import GRU, RNN, GRUCell, Recurrent, RNNCell, convert

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
ABS_TOL_F64 = 1e-10
D, H = 3, 4
LENGTHS = [6, 4, 4, 1]  # sorted, with a tie and a sequence of length 1
UNSORTED = [4, 6, 1, 4]


def make_pair(into: str = "ours", **kwargs) -> tuple[GRU, nn.GRU]:
    """Our GRU and nn.GRU with the same weights, copied through state_dict (different seeds, so
    the copy is what makes them equal)."""
    torch.manual_seed(0)
    theirs = nn.GRU(D, H, dtype=F64, **kwargs)
    torch.manual_seed(1)
    ours = GRU(D, H, dtype=F64, **kwargs)
    (ours if into == "ours" else theirs).load_state_dict((theirs if into == "ours" else ours).state_dict())
    return ours, theirs


def run_with_grads(model, x, hx, lengths=None, enforce_sorted=True) -> list[torch.Tensor]:
    """[output, h_n, dx, dhx, d<every parameter>] for a random linear function of output and h_n."""
    x = x.detach().clone().requires_grad_()
    hx = hx.detach().clone().requires_grad_()
    inp = x if lengths is None else pack_padded_sequence(x, lengths, batch_first=model.batch_first,
                                                         enforce_sorted=enforce_sorted)
    output, h_n = model(inp, hx)
    if lengths is not None:
        assert isinstance(output, PackedSequence)
        output = output.data
    gen = torch.Generator().manual_seed(5)  # drawn on the CPU: the same numbers for any device
    loss = (output * torch.randn(output.shape, generator=gen, dtype=F64).to(output.device)).sum() \
        + (h_n * torch.randn(h_n.shape, generator=gen, dtype=F64).to(h_n.device)).sum()
    grads = torch.autograd.grad(loss, [x, hx, *model.parameters()])
    return [output.detach(), h_n.detach(), *grads]


def named(module: nn.Module, weights) -> dict:
    """{parameter name: weight}, for torch.func.functional_call."""
    return dict(zip(dict(module.named_parameters()), weights, strict=True))


def assert_parity(ours, theirs, diffs, *args, **kwargs) -> None:
    got, want = run_with_grads(ours, *args, **kwargs), run_with_grads(theirs, *args, **kwargs)
    for a, b in zip(got, want, strict=True):
        a, b = a.cpu(), b.cpu()
        diffs("float64 max abs vs nn.GRU", max_abs(a, b))
        assert max_abs(a, b) <= ABS_TOL_F64


GRID = [
    {},
    {"bias": False},
    {"num_layers": 2},
    {"bidirectional": True},
    {"num_layers": 3, "bidirectional": True, "batch_first": True},
    {"num_layers": 2, "bidirectional": True, "bias": False, "batch_first": True},
]


@pytest.mark.parametrize("input_kind", ["padded", "T=1", "N=0", "N=1", "unbatched", "packed", "unsorted"])
@pytest.mark.parametrize("config", GRID, ids=str)
def test_gru_parity(config, input_kind, loops, diffs):
    ours, theirs = make_pair(**config)
    dirs = 2 if ours.bidirectional else 1
    T, N = {"T=1": (1, 3), "N=0": (5, 0), "N=1": (5, 1)}.get(input_kind, (6, 4))
    torch.manual_seed(2)
    if input_kind == "unbatched":
        x, hx = torch.randn(T, D, dtype=F64), torch.randn(ours.num_layers * dirs, H, dtype=F64)
        assert_parity(ours, theirs, diffs, x, hx)
        return
    x = torch.randn((N, T, D) if ours.batch_first else (T, N, D), dtype=F64)
    hx = torch.randn(ours.num_layers * dirs, N, H, dtype=F64)
    lengths = {"packed": LENGTHS, "unsorted": UNSORTED}.get(input_kind)
    assert_parity(ours, theirs, diffs, x, hx, lengths, enforce_sorted=input_kind != "unsorted")


@pytest.mark.parametrize("config", [{"num_layers": 2, "bidirectional": True}, {"bias": False}], ids=str)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_gru_gradcheck_and_gradgradcheck(config, packed, loops):
    ours, _ = make_pair(**config)
    dirs = 2 if ours.bidirectional else 1
    torch.manual_seed(3)
    x = torch.randn(4, 3, D, dtype=F64, requires_grad=True)
    hx = torch.randn(ours.num_layers * dirs, 3, H, dtype=F64, requires_grad=True)
    params = list(ours.parameters())

    def f(x, hx, *weights):
        inp = pack_padded_sequence(x, [4, 2, 1]) if packed else x
        output, h_n = torch.func.functional_call(ours, named(ours, weights), (inp, hx))
        return (output.data if packed else output), h_n

    assert gradcheck(f, (x, hx, *params))
    assert gradgradcheck(f, (x, hx, *params))  # autograd over our differentiable backward


def test_gru_dropout_equals_nn_under_the_same_masks(diffs):
    # Ours draws its masks with dropout_masks; nn.GRU draws its own: compare through a mask-free
    # path instead: p = 1 zeroes every inner output in both.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = make_pair(num_layers=2, dropout=1.0)
    torch.manual_seed(2)
    x, hx = torch.randn(5, 3, D, dtype=F64), torch.randn(2, 3, H, dtype=F64)
    assert_parity(ours.train(), theirs.train(), diffs, x, hx)


def test_gru_cell_parity_and_gradcheck(loops, diffs):
    torch.manual_seed(0)
    theirs = nn.GRUCell(D, H, dtype=F64)
    ours = GRUCell(D, H, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    for shape in [(4, D), (D,), (0, D)]:
        x = torch.randn(shape, dtype=F64, requires_grad=True)
        hx = torch.randn(*shape[:-1], H, dtype=F64, requires_grad=True)
        for args in [(x,), (x, hx)]:
            got, want = ours(*args), theirs(*args)
            diffs("float64 max abs vs nn.GRUCell", max_abs(got, want))
            assert max_abs(got, want) <= ABS_TOL_F64
            g_got = torch.autograd.grad(got.sum(), [*args, *ours.parameters()], allow_unused=True)
            g_want = torch.autograd.grad(want.sum(), [*args, *theirs.parameters()], allow_unused=True)
            for a, b in zip(g_got, g_want, strict=True):
                assert max_abs(a, b) <= ABS_TOL_F64
    x, hx = torch.randn(3, D, dtype=F64, requires_grad=True), torch.randn(3, H, dtype=F64, requires_grad=True)
    assert gradcheck(lambda x, hx, *w: torch.func.functional_call(ours, named(ours, w), (x, hx)),
                     (x, hx, *ours.parameters()))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("input_kind", ["padded", "packed"])
def test_cuda_gru_parity(input_kind, diffs):
    """On a GPU, the GRU's PyTorch loop against nn.GRU on the CPU, both float64 (the oracle)."""
    ours, theirs = make_pair(num_layers=2, bidirectional=True)
    ours.cuda()
    assert all(p.is_cuda for p in ours.parameters())
    torch.manual_seed(2)
    x, hx = torch.randn(6, 4, D, dtype=F64), torch.randn(4, 4, H, dtype=F64)
    lengths = LENGTHS if input_kind == "packed" else None
    got = run_with_grads(ours, x.cuda(), hx.cuda(), lengths)
    want = run_with_grads(theirs, x, hx, lengths)
    for a, b in zip(got, want, strict=True):
        assert a.is_cuda
        diffs("cuda float64 max abs vs nn.GRU", max_abs(a.cpu(), b))
        assert max_abs(a.cpu(), b) <= ABS_TOL_F64


# --------------------------------------------------------------------------------------------
# torch's module: parameters, state_dict, errors, isinstance, repr
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", GRID, ids=str)
def test_same_init_and_state_dict_both_ways(config):
    torch.manual_seed(7)
    theirs = nn.GRU(D, H, **config)
    torch.manual_seed(7)
    ours = GRU(D, H, **config)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the same draws, in the same order
    make_pair(into="ours", **config)
    make_pair(into="nn", **config)


def test_isinstance_repr_and_pickle():
    ours = GRU(D, H, num_layers=2)
    assert isinstance(ours, nn.RNNBase) and isinstance(GRUCell(D, H), nn.GRUCell)
    assert isinstance(RNN(D, H), nn.RNNBase) and isinstance(RNNCell(D, H), nn.RNNCell)
    assert not isinstance(ours, nn.GRU) and not isinstance(RNN(D, H), nn.RNN)  # see modules.py
    assert repr(ours) == "scratchrnn." + repr(nn.GRU(D, H, num_layers=2))
    assert repr(GRUCell(D, H, bias=False)) == "scratchrnn." + repr(nn.GRUCell(D, H, bias=False))
    again = pickle.loads(pickle.dumps(ours))
    assert type(again) is GRU and torch.equal(again.weight_hh_l1, ours.weight_hh_l1)
    x = torch.randn(2, 3, D)
    assert torch.equal(again(x)[0], ours(x)[0])


NO_STEPS = PackedSequence(torch.empty(0, D), torch.empty(0, dtype=torch.int64))
ERRORS = [
    ("input 4-D", lambda m: m.GRU(D, H)(torch.randn(1, 2, 3, D))),
    ("input_size", lambda m: m.GRU(D, H)(torch.randn(4, 2, D + 1))),
    ("hx shape", lambda m: m.GRU(D, H)(torch.randn(4, 2, D), torch.randn(1, 3, H))),
    ("hx 2-D for batched", lambda m: m.GRU(D, H)(torch.randn(4, 2, D), torch.randn(2, H))),
    ("hx 3-D for unbatched", lambda m: m.GRU(D, H)(torch.randn(4, D), torch.randn(1, 1, H))),
    ("input dtype", lambda m: m.GRU(D, H)(torch.randn(4, 2, D, dtype=F64))),
    ("seq_len 0", lambda m: m.GRU(D, H)(torch.randn(0, 2, D))),
    ("packed, no steps", lambda m: m.GRU(D, H)(NO_STEPS)),
    ("RNN packed, no steps", lambda m: m.RNN(D, H)(NO_STEPS)),
    ("proj_size", lambda m: m.GRU(D, H, proj_size=2)),
    ("hidden_size 0", lambda m: m.GRU(D, 0)),
    ("dropout", lambda m: m.GRU(D, H, dropout=2)),
    ("cell input 3-D", lambda m: m.GRUCell(D, H)(torch.randn(1, 2, D))),
    ("cell hx 3-D", lambda m: m.GRUCell(D, H)(torch.randn(2, D), torch.randn(1, 2, H))),
    ("cell input_size", lambda m: m.GRUCell(D, H)(torch.randn(2, D + 1))),
    ("cell hidden_size", lambda m: m.GRUCell(D, H)(torch.randn(2, D), torch.randn(2, H + 1))),
    ("cell batch", lambda m: m.GRUCell(D, H)(torch.randn(2, D), torch.randn(3, H))),
    ("cell hx 2-D for 1-D input", lambda m: m.GRUCell(D, H)(torch.randn(D), torch.randn(1, H))),
    ("cell dtype", lambda m: m.GRUCell(D, H)(torch.randn(2, D, dtype=F64))),
    ("cell hx dtype", lambda m: m.GRUCell(D, H)(torch.randn(2, D), torch.randn(2, H, dtype=F64))),
]


@pytest.mark.parametrize("call", [c for _, c in ERRORS], ids=[n for n, _ in ERRORS])
def test_errors_equal_torchs(call):
    with pytest.raises(Exception) as theirs:
        call(nn)
    with pytest.raises(type(theirs.value)) as ours:
        call(scratchrnn)
    assert str(ours.value) == str(theirs.value)


def test_gru_cell_of_hidden_size_zero_like_torch():
    x = torch.randn(2, D)
    assert GRUCell(D, 0)(x).shape == nn.GRUCell(D, 0)(x).shape == (2, 0)


# --------------------------------------------------------------------------------------------
# convert, Recurrent
# --------------------------------------------------------------------------------------------


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(D, H, num_layers=2, bidirectional=True)
        self.cell = nn.GRUCell(2 * H, H)
        self.rnn = nn.RNN(H, H)

    def forward(self, x):
        output, _ = self.gru(x)
        h = self.cell(output[-1])
        return self.rnn(h.unsqueeze(0))[0]


def test_convert_swaps_grus_and_back_without_drawing_random_numbers():
    torch.manual_seed(0)
    model = Model().double()
    x = torch.randn(5, 2, D, dtype=F64)
    want = model(x)
    state = torch.get_rng_state()
    convert(model)
    assert torch.equal(torch.get_rng_state(), state)  # no random numbers drawn
    assert (type(model.gru), type(model.cell), type(model.rnn)) == (GRU, GRUCell, RNN)
    assert max_abs(model(x), want) <= ABS_TOL_F64
    assert convert(model) is model and type(model.gru) is GRU  # ours are not swapped again
    convert(model, to="torch")
    assert torch.equal(torch.get_rng_state(), state)
    assert (type(model.gru), type(model.cell), type(model.rnn)) == (nn.GRU, nn.GRUCell, nn.RNN)
    assert max_abs(model(x), want) <= ABS_TOL_F64
    ours = GRU.from_torch(nn.GRU(D, H, dtype=F64).eval())
    assert type(ours) is GRU and not ours.training and type(ours.to_torch()) is nn.GRU


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_recurrent_over_a_registered_cell_equals_the_drop_in(packed, loops):
    torch.manual_seed(0)
    gru = GRU(D, H, num_layers=2, bidirectional=True, dtype=F64)
    generic = Recurrent("gru", D, H, num_layers=2, bidirectional=True, dtype=F64)
    assert [n for n, _ in generic.named_parameters()] == [n for n, _ in gru.named_parameters()]
    generic.load_state_dict(gru.state_dict())
    x = torch.randn(5, 3, D, dtype=F64)
    inp = pack_padded_sequence(x, [5, 3, 2]) if packed else x
    (out_a, h_a), (out_b, h_b) = gru(inp), generic(inp)
    data = (lambda out: out.data) if packed else (lambda out: out)
    assert torch.equal(h_a, h_b) and torch.equal(data(out_a), data(out_b))
    expected = f"scratchrnn.Recurrent('rnn_relu', {D}, {H}, bias=False)"
    assert repr(Recurrent("rnn_relu", D, H, bias=False)) == expected


def test_init_schemes_treat_each_gate_of_w_hh_on_its_own():
    gru = GRU(D, H, num_layers=2, dtype=F64)
    scratchrnn.init_rnn_(gru, "identity")
    assert torch.equal(gru.weight_hh_l1, torch.eye(H, dtype=F64).repeat(3, 1))
    scratchrnn.init_rnn_(gru, "orthogonal")
    for block in gru.weight_hh_l0.split(H):  # r, z, n: each orthogonal
        assert max_abs(block @ block.t(), torch.eye(H, dtype=F64)) <= 1e-12
    assert not gru.bias_ih_l0.any()
