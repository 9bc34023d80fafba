"""The options of issue 19 (nonlinearities, layer_norm, recurrent_dropout, weight_drop, zoneout)
against an independent reference written in plain autograd ops, one step at a time.

float64, fixed seeds, ≤ 1e-10 relative error (max |a − b| / max |b|); the same masks on both
sides because the reference draws them from torch's generator in the order the module documents
(core/options.py), after the same ``manual_seed``.
Grid: layers, bidirectional (with dropout between layers), packed, batch_first, unbatched, T = 1;
each option alone, every pair, and all; both loop settings (with the C loop enabled, layer_norm,
zoneout and weight_drop on the tanh/relu Elman cell run it; recurrent_dropout in training and the
other nonlinearities run the PyTorch loop; test_options_accel.py checks which runs); gradcheck;
torch.compile and torch.export.
Letters: T N D H L.
"""

from __future__ import annotations

import itertools
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from helpers import max_abs, rel_err
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from scratchrnn import GRU, RNN, Activation, GRUCell, RNNCell

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
TOL = 1e-10
D, H = 3, 4
LENGTHS = [5, 3, 3, 1]  # sorted, a tie, a sequence of length 1

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "gelu": F.gelu, "silu": F.silu,
               "softsign": F.softsign, "sigmoid": torch.sigmoid, "leaky_relu": F.leaky_relu}
SINE = Activation(torch.sin, torch.cos)

# ----- the reference -------------------------------------------------------------------------


def reference(m: nn.Module, x: torch.Tensor, sizes: list[int], hx: torch.Tensor, seed: int):
    """(output rows, h_n) of ``m`` on time-major flattened ``x`` (rows, D), ``sizes[t]`` rows at
    step t, written again: masks drawn as the module draws them, then a step loop in autograd."""
    torch.manual_seed(seed)
    L, dirs, training = m.num_layers, 2 if m.bidirectional else 1, m.training
    rows, N = x.shape[0], sizes[0]
    drop = [x.new_empty(rows, dirs * H).bernoulli_(1 - m.dropout).div_(1 - m.dropout)
            for _ in range(L - 1)] if training and m.dropout > 0 else []
    weights = {name: getattr(m, name) for name in m._flat_weights_names}
    if training and m.weight_drop > 0:
        keep = 1 - m.weight_drop
        for name in m._flat_weights_names:
            if name.startswith("weight_hh"):
                weights[name] = weights[name] * torch.empty_like(weights[name]).bernoulli_(keep) / keep
    rd, zo = {}, {}
    for idx in range(L * dirs):
        if training and m.recurrent_dropout > 0:
            p = m.recurrent_dropout
            rd[idx] = x.new_empty(N, H).bernoulli_(1 - p) / (1 - p)
        if m.zoneout > 0:
            zo[idx] = (x.new_empty(rows, H).bernoulli_(m.zoneout) if training
                       else x.new_full((rows, H), m.zoneout))
    offsets = [0, *itertools.accumulate(sizes)]
    gru = m.mode == "GRU"
    act = None if gru else (m.nonlinearity if isinstance(m.nonlinearity, Activation)
                            else ACTIVATIONS[m.nonlinearity])
    layer_in, h_n = x, []
    for layer in range(L):
        outs = []
        for d in range(dirs):
            suffix, idx = f"_l{layer}" + ("_reverse" if d else ""), layer * dirs + d
            W_ih, W_hh = weights["weight_ih" + suffix], weights["weight_hh" + suffix]
            b_ih, b_hh = ((weights["bias_ih" + suffix], weights["bias_hh" + suffix]) if m.bias
                          else (None, None))
            h, step_out = hx[idx], {}
            for t in (reversed(range(len(sizes))) if d else range(len(sizes))):
                b, r = sizes[t], slice(offsets[t], offsets[t] + sizes[t])
                x_t, h_prev = layer_in[r], h[:b]
                h_in = h_prev * rd[idx][:b] if idx in rd else h_prev
                if gru:
                    xr, xz, xn = F.linear(x_t, W_ih, b_ih).chunk(3, 1)
                    hr, hz, hn = F.linear(h_in, W_hh, b_hh).chunk(3, 1)
                    r_t, z_t = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                    n_t = torch.tanh(xn + r_t * hn)
                    h_new = (1 - z_t) * n_t + z_t * h_prev
                else:
                    a = F.linear(x_t, W_ih, b_ih) + F.linear(h_in, W_hh, b_hh)
                    if m.layer_norm:
                        gamma, beta = getattr(m, "ln_weight" + suffix), getattr(m, "ln_bias" + suffix)
                        a = F.layer_norm(a, (H,), gamma, beta, eps=1e-5)
                    h_new = act(a)
                if idx in zo:
                    h_new = zo[idx][r] * h_prev + (1 - zo[idx][r]) * h_new
                step_out[t] = h_new
                h = torch.cat([h_new, h[b:]])
            outs.append(torch.cat([step_out[t] for t in range(len(sizes))]))
            h_n.append(h)
        out = torch.cat(outs, 1)
        layer_in = out * drop[layer] if layer < L - 1 and drop else out
    return out, torch.stack(h_n)


# ----- the grid -------------------------------------------------------------------------------

SINGLES = [
    {"nonlinearity": "gelu"}, {"nonlinearity": "silu"}, {"nonlinearity": "softsign"},
    {"nonlinearity": "sigmoid"}, {"nonlinearity": "leaky_relu"}, {"nonlinearity": SINE},
    {"layer_norm": True}, {"recurrent_dropout": 0.3}, {"weight_drop": 0.4}, {"zoneout": 0.3},
]
_PAIRABLE = [{"nonlinearity": "gelu"}, {"layer_norm": True}, {"recurrent_dropout": 0.3},
             {"weight_drop": 0.4}, {"zoneout": 0.3}]
PAIRS = [a | b for a, b in itertools.combinations(_PAIRABLE, 2)]
ALL = [{"nonlinearity": "silu", "layer_norm": True, "recurrent_dropout": 0.3, "weight_drop": 0.4,
        "zoneout": 0.3}]
RNN_OPTIONS = SINGLES + PAIRS + ALL
GRU_OPTIONS = [{"weight_drop": 0.4}, {"zoneout": 0.3}, {"weight_drop": 0.4, "zoneout": 0.3}]


def _id(kwargs: dict) -> str:
    return "+".join(f"{k}={v.name if isinstance(v, Activation) else v}" for k, v in kwargs.items())


CASES = {  # name: (module kwargs, T, lengths or None, batched)
    "L1": ({}, 5, None, True),
    "L2-bi-dropout": ({"num_layers": 2, "bidirectional": True, "dropout": 0.5}, 5, None, True),
    "packed-L2-bi": ({"num_layers": 2, "bidirectional": True}, 5, LENGTHS, True),
    "batch_first-nobias": ({"batch_first": True, "bias": False}, 4, None, True),
    "unbatched": ({}, 4, None, False),
    "T1-L2": ({"num_layers": 2}, 1, None, True),
}


def build(cls, options: dict, case: dict, training: bool = True) -> nn.Module:
    torch.manual_seed(0)
    m = cls(D, H, dtype=F64, **case, **options)
    with torch.no_grad():  # γ and β away from 1 and 0, so that the test sees them
        for name in getattr(m, "_ln_names", []):
            getattr(m, name).uniform_(0.5, 1.5)
    return m.train(training)


def inputs(m: nn.Module, T: int, lengths, batched: bool):
    """(the leaves x and hx, the module's input and hx, the reference's x rows, sizes and hx)."""
    N = len(lengths) if lengths else 3
    gen = torch.Generator().manual_seed(1)
    dirs = 2 if m.bidirectional else 1
    x = torch.randn(T, N, D, generator=gen, dtype=F64, requires_grad=True)
    hx = torch.randn(m.num_layers * dirs, N, H, generator=gen, dtype=F64, requires_grad=True)
    if lengths:
        packed = pack_padded_sequence(x, lengths)
        return x, hx, packed, hx, packed.data, packed.batch_sizes.tolist(), hx
    if not batched:
        return x, hx, x[:, 0], hx[:, 0], x[:, 0], [1] * T, hx[:, :1]
    inp = x.transpose(0, 1) if m.batch_first else x
    return x, hx, inp, hx, x.reshape(T * N, D), [N] * T, hx


def rows_of(m, output, batched):
    if isinstance(output, PackedSequence):
        return output.data
    if not batched:
        return output
    output = output.transpose(0, 1) if m.batch_first else output
    return output.reshape(-1, output.shape[-1])


def compare(m, case_name, seed=7):
    _, T, lengths, batched = CASES[case_name]
    x, hx_leaf, inp, hx, x_rows, sizes, hx_ref = inputs(m, T, lengths, batched)
    torch.manual_seed(seed)
    output, h_n = m(inp, hx)
    ours = [rows_of(m, output, batched), h_n.reshape(hx_ref.shape)]
    ref = list(reference(m, x_rows, sizes, hx_ref, seed))
    gen = torch.Generator().manual_seed(5)
    weights = [torch.randn(t.shape, generator=gen, dtype=F64) for t in ref]
    leaves = [x, hx_leaf, *m.parameters()]
    grads = [torch.autograd.grad(sum((w * o).sum() for w, o in zip(weights, outs, strict=True)), leaves,
                                 allow_unused=True, retain_graph=True) for outs in (ours, ref)]
    for a, b in zip(ours + list(grads[0]), ref + list(grads[1]), strict=True):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert rel_err(a, b) <= TOL, rel_err(a, b)


@pytest.mark.parametrize("case_name", CASES)
@pytest.mark.parametrize("options", RNN_OPTIONS, ids=_id)
def test_rnn_options_equal_the_reference_in_training(options, case_name, loops):
    compare(build(RNN, options, CASES[case_name][0]), case_name)


@pytest.mark.parametrize("case_name", ["L2-bi-dropout", "packed-L2-bi"])
@pytest.mark.parametrize("options", RNN_OPTIONS, ids=_id)
def test_rnn_options_equal_the_reference_in_eval(options, case_name, loops):
    compare(build(RNN, options, CASES[case_name][0], training=False), case_name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case_name", CASES)
@pytest.mark.parametrize("options", GRU_OPTIONS, ids=_id)
def test_gru_options_equal_the_reference(options, case_name, training, loops):
    compare(build(GRU, options, CASES[case_name][0], training), case_name)


@pytest.mark.parametrize("options", RNN_OPTIONS + [{"gru": True} | o for o in GRU_OPTIONS], ids=_id)
def test_gradcheck(options):
    """Finite differences of the module, masks fixed by seeding before each call, over x, hx and
    every parameter."""
    options = dict(options)
    cls = GRU if options.pop("gru", False) else RNN
    m = build(cls, options, {"num_layers": 2, "bidirectional": True})
    names = [n for n, _ in m.named_parameters()]
    packed = pack_padded_sequence(torch.randn(3, 2, D, dtype=F64), [3, 2])
    hx = torch.randn(4, 2, H, dtype=F64, requires_grad=True)
    data = packed.data.requires_grad_()

    def f(data, hx, *params):
        torch.manual_seed(3)
        out, h_n = torch.func.functional_call(m, dict(zip(names, params, strict=True)),
                                              (PackedSequence(data, packed.batch_sizes), hx))
        return out.data, h_n

    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    assert gradcheck(f, (data, hx, *params))


# ----- defaults, parameters, state_dict ------------------------------------------------------


def test_defaults_keep_nn_rnn_parameters_init_and_state_dict():
    for cls, theirs in ((RNN, nn.RNN), (GRU, nn.GRU)):
        torch.manual_seed(0)
        a = cls(D, H, 2, bidirectional=True, layer_norm=False, recurrent_dropout=0, weight_drop=0, zoneout=0)
        torch.manual_seed(0)
        b = theirs(D, H, 2, bidirectional=True)
        assert list(a.state_dict()) == list(b.state_dict())
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
        assert repr(a) == "scratchrnn." + repr(b)


def test_layer_norm_parameters_follow_each_layer_and_direction():
    torch.manual_seed(0)
    ours = RNN(D, H, 2, bidirectional=True, layer_norm=True)
    torch.manual_seed(0)
    theirs = nn.RNN(D, H, 2, bidirectional=True)
    names = list(ours.state_dict())
    assert names[4:6] == ["ln_weight_l0", "ln_bias_l0"] and names[10:12] == ["ln_weight_l0_reverse",
                                                                               "ln_bias_l0_reverse"]
    assert names[-2:] == ["ln_weight_l1_reverse", "ln_bias_l1_reverse"]
    nn_names = [n for n in names if not n.startswith("ln_")]
    assert nn_names == list(theirs.state_dict())  # and the same draws: torch's init, in torch's order
    assert all(torch.equal(ours.state_dict()[n], theirs.state_dict()[n]) for n in nn_names)
    assert torch.equal(ours.ln_weight_l1, torch.ones(H)) and torch.equal(ours.ln_bias_l1, torch.zeros(H))
    ours.reset_parameters()
    assert torch.equal(ours.ln_weight_l1, torch.ones(H))
    again = RNN(D, H, 2, bidirectional=True, layer_norm=True)
    again.load_state_dict(ours.state_dict())
    assert pickle.loads(pickle.dumps(again)).layer_norm


def test_eval_turns_off_the_masks_and_zoneout_takes_its_expectation():
    torch.manual_seed(0)
    m = RNN(D, H, recurrent_dropout=0.5, weight_drop=0.5, dtype=F64).eval()
    x = torch.randn(4, 2, D, dtype=F64)
    plain = RNN(D, H, dtype=F64)
    plain.load_state_dict(m.state_dict())
    assert torch.equal(m(x)[0], plain(x)[0])
    z = RNN(D, H, zoneout=0.25, dtype=F64).eval()
    z.load_state_dict(m.state_dict())
    h, hs = torch.zeros(2, H, dtype=F64), []
    for x_t in x:  # h_t = p h_{t−1} + (1 − p) tanh(a_t)
        h = 0.25 * h + 0.75 * torch.tanh(F.linear(x_t, z.weight_ih_l0, z.bias_ih_l0)
                                         + F.linear(h, z.weight_hh_l0, z.bias_hh_l0))
        hs.append(h)
    assert max_abs(z(x)[0], torch.stack(hs)) <= TOL


def test_weight_drop_never_modifies_the_parameter_and_draws_one_mask_per_call():
    torch.manual_seed(0)
    m = RNN(D, H, weight_drop=0.5, dtype=F64)
    before = m.weight_hh_l0.detach().clone()
    x = torch.randn(6, 2, D, dtype=F64)
    torch.manual_seed(1)
    a = m(x)[0]
    torch.manual_seed(1)
    assert torch.equal(m(x)[0], a)  # reproducible under a seed
    assert not torch.equal(m(x)[0], a)  # another call, another mask
    m(x)[0].sum().backward()
    assert torch.equal(m.weight_hh_l0, before)


def test_activation_of_ones_own_and_rnncell_nonlinearities():
    m = RNN(D, H, nonlinearity=SINE, dtype=F64)
    assert m.cell_name == "rnn_sin"
    assert RNN(D, H, layer_norm=True, recurrent_dropout=0.1, zoneout=0.1).cell_name == "rnn_tanh+ln+rd+zo"
    assert RNN(D, H, recurrent_dropout=0.1).eval().cell_name == "rnn_tanh"
    for nl in ("gelu", SINE):
        torch.manual_seed(0)
        cell = RNNCell(D, H, nonlinearity=nl, dtype=F64)
        x, h = torch.randn(2, D, dtype=F64), torch.randn(2, H, dtype=F64)
        f = ACTIVATIONS.get(nl, torch.sin)
        expected = f(F.linear(x, cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh))
        assert max_abs(cell(x, h), expected) <= TOL
    with pytest.raises(ValueError, match="a different Activation named 'sin'"):
        RNN(D, H, nonlinearity=Activation(torch.sin, torch.sin))


# ----- bad input, as nn.RNN treats dropout ---------------------------------------------------


@pytest.mark.parametrize("name", ["recurrent_dropout", "weight_drop", "zoneout"])
@pytest.mark.parametrize("value, error", [(1.0, ValueError), (-0.1, ValueError), (math.nan, ValueError),
                                          ("0.1", TypeError), (True, TypeError), (None, TypeError)])
def test_bad_probabilities(name, value, error):
    with pytest.raises(error, match=rf"^{name} should be a number in range \[0, 1\).*got {value!r}"):
        RNN(D, H, **{name: value})


def test_options_a_cell_cannot_take_and_unknown_nonlinearities():
    with pytest.raises(ValueError, match=r"^layer_norm: the 'gru' cell .* expected False .*, got True$"):
        GRU(D, H, layer_norm=True)
    with pytest.raises(ValueError, match=r"^recurrent_dropout: the 'gru' cell .* expected 0.0 .*, got 0.2$"):
        GRU(D, H, recurrent_dropout=0.2)
    with pytest.raises(TypeError, match=r"^layer_norm should be a bool, got 1 of type int$"):
        RNN(D, H, layer_norm=1)
    with pytest.raises(ValueError, match=r"^Unknown nonlinearity 'swish'\. Select from 'tanh', 'relu'"):
        RNN(D, H, nonlinearity="swish")
    with pytest.raises(ValueError, match=r"^Unknown nonlinearity 'swish'\. Select from 'tanh', 'relu'"):
        RNN(D, H, 1, "swish")
    no_ln = r"^to_torch: torch.nn has no layer_norm; expected its default, got True$"
    with pytest.raises(ValueError, match=no_ln):
        RNN(D, H, layer_norm=True).to_torch()
    assert type(RNN(D, H, 1, "relu").to_torch()) is nn.RNN  # torch's two pass through torch's checks


# ----- PyTorch 2 ------------------------------------------------------------------------------

COMPILED = [{"nonlinearity": "gelu"}, {"layer_norm": True}, {"recurrent_dropout": 0.3},
            {"weight_drop": 0.4}, {"zoneout": 0.3}, ALL[0]]


@pytest.mark.parametrize("options", COMPILED, ids=_id)
def test_compile_and_export_with_each_option(options, tmp_path):
    torch._dynamo.reset()  # a new module each time: no recompile limit across the cases
    m = build(RNN, options, {"num_layers": 2, "bidirectional": True})
    x = torch.randn(5, 3, D, dtype=F64)
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    m.eval()
    assert max_abs(compiled(x)[0], m(x)[0]) <= TOL  # eval: no masks, deterministic
    m.train()
    xg = x.clone().requires_grad_()
    out, h_n = compiled(xg)  # training: the masks drawn in the graph, outside the operator
    (out.sum() + h_n.sum()).backward()
    assert xg.grad is not None and all(p.grad is not None for p in m.parameters())
    m.eval()
    program = torch.export.export(m, (x,))
    torch.export.save(program, tmp_path / "m.pt2")
    loaded = torch.export.load(tmp_path / "m.pt2").module()
    assert max_abs(loaded(x)[0], m(x)[0]) <= TOL


@pytest.mark.parametrize("options", COMPILED, ids=_id)
def test_double_backward_and_forward_mode(options):
    """gradgradcheck (autograd over our differentiable backward) for each option; forward mode
    (torch.func.jvp) equals the Jacobian from reverse mode."""
    m = build(RNN, options, {"num_layers": 2, "bidirectional": True})
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(3, 2, D, dtype=F64, requires_grad=True)

    def f(x, *params):
        torch.manual_seed(1)
        return torch.func.functional_call(m, dict(zip(names, params, strict=True)), (x,))[0]

    assert gradgradcheck(f, (x, *params))
    v = torch.randn_like(x)
    _, jvp = torch.func.jvp(lambda x: f(x, *params), (x,), (v,))
    jacobian = torch.func.jacrev(lambda x: f(x, *params))(x.detach())  # (T, N, dirs·H, T, N, D)
    assert max_abs(jvp, (jacobian * v).sum((-3, -2, -1))) <= TOL


# ----- forward mode (torch.func.jvp, jacfwd) against forward and reverse mode over the reference --

JVP_OPTIONS = [{"layer_norm": True}, {"recurrent_dropout": 0.3}, {"layer_norm": True, "zoneout": 0.3},
               {"recurrent_dropout": 0.3, "zoneout": 0.3}, {"layer_norm": True, "recurrent_dropout": 0.3},
               {"layer_norm": True, "recurrent_dropout": 0.3, "zoneout": 0.3}, ALL[0]]


class _Reference(nn.Module):
    """:func:`reference` as a module around ``m``, so that torch.func.functional_call can swap m's
    parameters (the reference reads them by name from m)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x_rows, hx, sizes, seed):
        return reference(self.m, x_rows, sizes, hx, seed)


def _functions(m: nn.Module, case_name: str, seed: int = 7):
    """(ours, the reference, params, x, hx): ours(params, x, hx) and ref(params, x, hx), both
    (output rows, h_n) in the reference's layout, x the input's rows (packed: the data)."""
    _, T, lengths, batched = CASES[case_name]
    _, _, inp, hx, x_rows, sizes, _ = inputs(m, T, lengths, batched)
    ref_module = _Reference(m)
    params = {name: p.detach() for name, p in m.named_parameters()}

    def ours(params, x, hx):
        torch.manual_seed(seed)
        packed = PackedSequence(x, inp.batch_sizes) if lengths else x.reshape(inp.shape)
        output, h_n = torch.func.functional_call(m, params, (packed, hx))
        return rows_of(m, output, batched), h_n

    def ref(params, x, hx):
        return torch.func.functional_call(ref_module, {f"m.{n}": p for n, p in params.items()},
                                          (x, hx, sizes, seed))

    return ours, ref, params, x_rows.detach(), hx.detach()


@pytest.mark.parametrize("case_name", ["L2-bi-dropout", "packed-L2-bi"])
@pytest.mark.parametrize("options", JVP_OPTIONS, ids=_id)
def test_jvp_equals_the_reference(options, case_name, loops):
    """torch.func.jvp of our hand-written tangents (layer norm's γ̇, β̇ among them; the masks
    constant) equals PyTorch's forward mode over the reference, with the same masks; tangents on
    x, hx and every parameter, in training (masks drawn) and in eval (zoneout's expectation)."""
    for training in (True, False):
        m = build(RNN, options, CASES[case_name][0], training)
        ours, ref, params, x, hx = _functions(m, case_name)
        gen = torch.Generator().manual_seed(2)
        tangents = ({n: torch.randn(p.shape, generator=gen, dtype=F64) for n, p in params.items()},
                    torch.randn(x.shape, generator=gen, dtype=F64),
                    torch.randn(hx.shape, generator=gen, dtype=F64))
        got = torch.func.jvp(ours, (params, x, hx), tangents)
        want = torch.func.jvp(ref, (params, x, hx), tangents)
        for a, b in zip([*got[0], *got[1]], [*want[0], *want[1]], strict=True):
            assert rel_err(a, b) <= TOL, rel_err(a, b)
        # Each parameter's tangent alone (γ, β among them) reaches the outputs.
        for name in params:
            alone = ({n: t if n == name else torch.zeros_like(t) for n, t in tangents[0].items()},
                     torch.zeros_like(x), torch.zeros_like(hx))
            (_, a), (_, b) = (torch.func.jvp(f, (params, x, hx), alone) for f in (ours, ref))
            assert rel_err(a[0], b[0]) <= TOL and rel_err(a[1], b[1]) <= TOL, name


@pytest.mark.parametrize("case_name", ["L2-bi-dropout", "packed-L2-bi"])
@pytest.mark.parametrize("options", [{"layer_norm": True}, {"recurrent_dropout": 0.3}, {"zoneout": 0.3},
                                     {"layer_norm": True, "recurrent_dropout": 0.3, "zoneout": 0.3}], ids=_id)
def test_jacfwd_equals_the_reference_jacobian(options, case_name, loops):
    """jacfwd (vmap over our jvp; randomness="same": one set of masks) equals jacrev of the
    reference (reverse-mode autograd over plain ops), wrt x, hx and every parameter."""
    m = build(RNN, options, CASES[case_name][0])
    ours, ref, params, x, hx = _functions(m, case_name)
    got = torch.func.jacfwd(ours, argnums=(0, 1, 2), randomness="same")(params, x, hx)
    want = torch.func.jacrev(ref, argnums=(0, 1, 2))(params, x, hx)
    got, want = torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)
    assert len(got) == len(want) == 2 * (len(params) + 2)
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) <= TOL, rel_err(a, b)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_cell_jvp_with_layer_norm_and_zoneout(training):
    """RNNCell (one step per call): jvp wrt x, h and every parameter (γ, β included) equals
    PyTorch's forward mode over the one-step reference, with the same zoneout mask."""
    torch.manual_seed(0)
    cell = RNNCell(D, H, dtype=F64, layer_norm=True, zoneout=0.3).train(training)
    with torch.no_grad():
        for name in cell._ln_names:
            getattr(cell, name).uniform_(0.5, 1.5)
    params = {n: p.detach() for n, p in cell.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    x, h = (torch.randn(3, D, generator=gen, dtype=F64), torch.randn(3, H, generator=gen, dtype=F64))

    def ours(params, x, h):
        torch.manual_seed(7)
        return torch.func.functional_call(cell, params, (x, h))

    def ref(params, x, h):
        torch.manual_seed(7)
        z = x.new_empty(1, x.shape[0], H).bernoulli_(0.3)[0] if training else x.new_full((x.shape[0], H), 0.3)
        a = (F.linear(x, params["weight_ih"], params["bias_ih"])
             + F.linear(h, params["weight_hh"], params["bias_hh"]))
        a = F.layer_norm(a, (H,), params["ln_weight"], params["ln_bias"], eps=1e-5)
        return z * h + (1 - z) * torch.tanh(a)

    tangents = ({n: torch.randn(p.shape, generator=gen, dtype=F64) for n, p in params.items()},
                torch.randn(x.shape, generator=gen, dtype=F64),
                torch.randn(h.shape, generator=gen, dtype=F64))
    (out, out_dot), (ref_out, ref_dot) = (torch.func.jvp(f, (params, x, h), tangents) for f in (ours, ref))
    assert rel_err(out, ref_out) <= TOL and rel_err(out_dot, ref_dot) <= TOL


@pytest.mark.parametrize("name", ["gelu", "silu", "softsign", "sigmoid", "leaky_relu"])
def test_check_cell_passes_for_each_new_nonlinearity(name):
    """The library's own cell check (gradcheck, gradgradcheck, steps against autograd over the
    cell's step, forward mode) on each new Elman cell."""
    from scratchrnn.core import cells
    from scratchrnn.testing import check_cell

    check_cell(cells.get(f"rnn_{name}"))


@pytest.mark.parametrize("options", [{"zoneout": 0.3}, {"recurrent_dropout": 0.3},
                                     {"layer_norm": True, "recurrent_dropout": 0.3}], ids=_id)
def test_vmap_with_the_same_masks_equals_a_loop(options):
    """torch.func.vmap (randomness="same": one mask per call) equals calling once per element
    with the same seed; recurrent dropout's (N, H) masks take the per-element path."""
    m = build(RNN, options, {"num_layers": 2, "bidirectional": True})
    xs = torch.randn(4, 5, 2, D, dtype=F64)
    torch.manual_seed(1)
    mapped = torch.func.vmap(lambda x: m(x)[0], randomness="same")(xs)
    looped = []
    for x in xs:
        torch.manual_seed(1)
        looped.append(m(x)[0])
    assert max_abs(mapped, torch.stack(looped)) <= TOL


def test_recurrent_refuses_a_cell_with_options():
    from scratchrnn import Recurrent

    RNN(D, H, zoneout=0.1, layer_norm=True)  # registers rnn_tanh+ln+zo
    with pytest.raises(ValueError, match=r"^cell: 'rnn_tanh\+ln\+zo' takes per-call masks"):
        Recurrent("rnn_tanh+ln+zo", D, H)
    assert Recurrent("rnn_gelu", D, H)(torch.randn(2, 1, D))[0].shape == (2, 1, H)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_options_on_cuda_equal_the_cpu():
    """The PyTorch loop on a GPU, every option at once, in eval (masks are the device's own draws
    in training): outputs and gradients equal the CPU's in float64."""
    results = []
    for device in ("cpu", "cuda"):
        m = build(RNN, ALL[0], {"num_layers": 2, "bidirectional": True}, training=False).to(device)
        x = torch.randn(5, 3, D, dtype=F64, generator=torch.Generator().manual_seed(2)).to(device)
        x.requires_grad_()
        output, h_n = m(x)
        (output.sum() + h_n.square().sum()).backward()
        results.append([t.detach().cpu() for t in (output, h_n, x.grad, *(p.grad for p in m.parameters()))])
    for a, b in zip(*results, strict=True):
        assert rel_err(b, a) <= TOL


# ----- RNNCell and GRUCell: layer_norm (RNNCell) and zoneout, one step per call -------------

CELL_OPTIONS = [(RNNCell, {"layer_norm": True}), (RNNCell, {"zoneout": 0.3}),
                (RNNCell, {"nonlinearity": "gelu", "layer_norm": True, "zoneout": 0.3}),
                (GRUCell, {"zoneout": 0.3})]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("cls, options", CELL_OPTIONS,
                         ids=[f"{c.__name__}-{_id(o)}" for c, o in CELL_OPTIONS])
def test_cell_options_equal_one_reference_step(cls, options, batched, training, loops):
    torch.manual_seed(0)
    cell = cls(D, H, dtype=F64, **options).train(training)
    with torch.no_grad():
        for name in cell._ln_names:
            getattr(cell, name).uniform_(0.5, 1.5)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, D, generator=gen, dtype=F64, requires_grad=True)
    h = torch.randn(3, H, generator=gen, dtype=F64, requires_grad=True)
    x_in, h_in = (x, h) if batched else (x[0], h[0])
    torch.manual_seed(7)
    ours = cell(x_in, h_in)
    torch.manual_seed(7)  # the reference: the same mask, one step in autograd
    xr, hr = (x, h) if batched else (x[:1], h[:1])
    p = cell.zoneout
    z = (xr.new_empty(1, xr.shape[0], H).bernoulli_(p)[0] if training else xr.new_full((xr.shape[0], H), p)) \
        if p else None
    if cls is GRUCell:
        h_new = torch.gru_cell(xr, hr, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    else:
        a = F.linear(xr, cell.weight_ih, cell.bias_ih) + F.linear(hr, cell.weight_hh, cell.bias_hh)
        if cell.layer_norm:
            a = F.layer_norm(a, (H,), cell.ln_weight, cell.ln_bias, eps=1e-5)
        h_new = ACTIVATIONS[cell.nonlinearity](a)
    ref = h_new if z is None else z * hr + (1 - z) * h_new
    ref = ref if batched else ref[0]
    w = torch.randn(ref.shape, generator=gen, dtype=F64)
    leaves = [x, h, *cell.parameters()]
    for a, b in zip([ours, *torch.autograd.grad((w * ours).sum(), leaves, allow_unused=True)],
                    [ref, *torch.autograd.grad((w * ref).sum(), leaves, allow_unused=True)], strict=True):
        assert (a is None and b is None) or rel_err(a, b) <= TOL


def test_cell_options_parameters_gradcheck_and_errors():
    torch.manual_seed(0)
    ours = RNNCell(D, H, layer_norm=True)
    torch.manual_seed(0)
    theirs = nn.RNNCell(D, H)
    assert list(ours.state_dict()) == [*theirs.state_dict(), "ln_weight", "ln_bias"]
    assert all(torch.equal(ours.state_dict()[n], t) for n, t in theirs.state_dict().items())
    cell = RNNCell(D, H, layer_norm=True, zoneout=0.2, dtype=F64)
    names = [n for n, _ in cell.named_parameters()]

    def f(x, h, *params):
        torch.manual_seed(3)
        return torch.func.functional_call(cell, dict(zip(names, params, strict=True)), (x, h))

    inputs = (torch.randn(2, D, dtype=F64, requires_grad=True),
              torch.randn(2, H, dtype=F64, requires_grad=True),
              *(p.detach().clone().requires_grad_() for p in cell.parameters()))
    assert gradcheck(f, inputs)
    with pytest.raises(ValueError, match=r"^layer_norm: the 'gru' cell .* expected False .*, got True$"):
        GRUCell(D, H, layer_norm=True)
    with pytest.raises(ValueError, match=r"^zoneout should be a number in range \[0, 1\).*got 1$"):
        RNNCell(D, H, zoneout=1)
    with pytest.raises(ValueError, match=r"^to_torch: torch.nn has no zoneout"):
        GRUCell(D, H, zoneout=0.1).to_torch()
    assert repr(RNNCell(D, H, zoneout=0.1)) == "scratchrnn.RNNCell(3, 4, zoneout=0.1)"
