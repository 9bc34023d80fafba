"""The language model's hand-written pieces against autograd (float64), the whole model against
the same model built from torch's parts, and generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import sym_rel_err

from scratchrnn.lm.model import (
    CharRNN,
    CharRNNConfig,
    TorchCharRNN,
    _Dropout,
    _Embedding,
    _Linear,
    cross_entropy,
    generate,
)

f64 = torch.float64


def grads(fn, *inputs):
    """Value and gradients of sum(fn(*inputs) * fixed random weights) w.r.t. inputs needing grad."""
    out = fn(*inputs)
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    wanted = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return out, torch.autograd.grad((out * w).sum(), wanted)


SHAPES = [(1, 1), (1, 5), (7, 1), (6, 4)]  # (T, N): T = 1 and N = 1 included


@pytest.mark.parametrize(("T", "N"), SHAPES)
def test_embedding_against_autograd(T, N, diffs):
    torch.manual_seed(0)
    V, E = 11, 5
    ids = torch.randint(V, (T, N))
    ids[0, 0] = ids[-1, -1]  # a repeated character: its rows must add up
    W_emb = torch.randn(V, E, dtype=f64, requires_grad=True)
    x, (dW,) = grads(_Embedding.apply, ids, W_emb)
    x_ref, (dW_ref,) = grads(lambda i, W: W[i], ids, W_emb)
    assert torch.equal(x, x_ref)
    diffs("charlm embedding dW_emb (rel, f64)", sym_rel_err(dW, dW_ref))
    assert sym_rel_err(dW, dW_ref) < 1e-14


@pytest.mark.parametrize("R", [1, 3, 24])
def test_output_layer_against_autograd(R, diffs):
    torch.manual_seed(0)
    H, V = 6, 9
    h = torch.randn(R, H, dtype=f64, requires_grad=True)
    W_hy = torch.randn(V, H, dtype=f64, requires_grad=True)
    b_y = torch.randn(V, dtype=f64, requires_grad=True)
    y, g = grads(_Linear.apply, h, W_hy, b_y)
    y_ref, g_ref = grads(F.linear, h, W_hy, b_y)
    assert sym_rel_err(y, y_ref) < 1e-14
    for name, a, b in zip(("dh", "dW_hy", "db_y"), g, g_ref, strict=True):
        diffs(f"charlm output layer {name} (rel, f64)", sym_rel_err(a, b))
        assert sym_rel_err(a, b) < 1e-13, name
    assert torch.autograd.gradcheck(_Linear.apply, (h, W_hy, b_y))


def test_output_layer_float32_large(diffs):
    """Large float32 products take the oneDNN path (``accel.matmul``): still F.linear's numbers."""
    torch.manual_seed(0)
    h = torch.randn(2048, 256, requires_grad=True)
    W_hy = torch.randn(65, 256, requires_grad=True)
    b_y = torch.randn(65, requires_grad=True)
    y, g = grads(_Linear.apply, h, W_hy, b_y)
    y_ref, g_ref = grads(F.linear, h, W_hy, b_y)
    assert sym_rel_err(y, y_ref) < 1e-5
    for name, a, b in zip(("dh", "dW_hy", "db_y"), g, g_ref, strict=True):
        diffs(f"charlm output layer {name} (rel, f32 large)", sym_rel_err(a, b))
        assert sym_rel_err(a, b) < 1e-5, name


@pytest.mark.parametrize("R", [1, 4, 50])
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: logits far apart, where a naive softmax overflows
def test_softmax_cross_entropy_against_autograd(R, scale, diffs):
    torch.manual_seed(0)
    V = 13
    logits = (scale * torch.randn(R, V, dtype=f64)).requires_grad_()
    targets = torch.randint(V, (R,))
    loss = cross_entropy(logits, targets)
    (dlogits,) = torch.autograd.grad(3.0 * loss, logits)  # a non-unit upstream gradient
    loss_ref = F.cross_entropy(logits, targets)
    (dlogits_ref,) = torch.autograd.grad(3.0 * loss_ref, logits)
    assert abs(loss.item() - loss_ref.item()) <= 1e-14 * max(1.0, abs(loss_ref.item()))
    diffs("charlm softmax-CE dlogits (rel, f64)", sym_rel_err(dlogits, dlogits_ref))
    assert sym_rel_err(dlogits, dlogits_ref) < 1e-13
    # the formula itself: (softmax − onehot) / R
    expected = (torch.softmax(logits.detach(), 1) - F.one_hot(targets, V)) / R * 3.0
    assert sym_rel_err(dlogits, expected) < 1e-13
    assert torch.autograd.gradcheck(lambda y: cross_entropy(y, targets), (logits,))


def test_cross_entropy_accepts_time_major_shapes():
    logits = torch.randn(5, 3, 7, dtype=f64)
    targets = torch.randint(7, (5, 3))
    expected = F.cross_entropy(logits.view(-1, 7), targets.view(-1))
    assert torch.allclose(cross_entropy(logits, targets), expected)


def test_dropout_backward_is_the_mask():
    h = torch.randn(4, 3, dtype=f64, requires_grad=True)
    m = torch.empty(4, 3, dtype=f64).bernoulli_(0.5).div_(0.5)
    out, (dh,) = grads(_Dropout.apply, h, m)
    out_ref, (dh_ref,) = grads(lambda a, b: a * b, h, m)
    assert torch.equal(out, out_ref) and torch.equal(dh, dh_ref)


def _twins(seed=0, **kwargs):
    torch.manual_seed(seed)
    ours = CharRNN(**kwargs).to(f64)
    torch.manual_seed(seed)
    theirs = TorchCharRNN(**kwargs).to(f64)
    return ours, theirs


CONFIGS = [
    dict(vocab_size=10, embedding_dim=4, hidden_size=8),
    dict(vocab_size=10, embedding_dim=0, hidden_size=8),  # one-hot input
    dict(vocab_size=7, embedding_dim=3, hidden_size=5, num_layers=2),
]


@pytest.mark.parametrize("kwargs", CONFIGS)
@pytest.mark.parametrize(("T", "N"), SHAPES)
def test_model_against_the_torch_built_twin(kwargs, T, N, diffs):
    ours, theirs = _twins(**kwargs)
    # the same seed gives the same initial weights, under the same names
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    V, L, H = kwargs["vocab_size"], kwargs.get("num_layers", 1), kwargs["hidden_size"]
    ids = torch.randint(V, (T, N))
    targets = torch.randint(V, (T, N))
    h0 = torch.randn(L, N, H, dtype=f64)
    results = []
    def torch_loss(y, c):
        return F.cross_entropy(y.view(-1, V), c.view(-1))

    for model, loss_fn in ((ours, cross_entropy), (theirs, torch_loss)):
        logits, h_n = model(ids, h0)
        loss = loss_fn(logits, targets) + h_n.sum()  # a gradient through h_n too
        results.append((logits, h_n, torch.autograd.grad(loss, list(model.parameters()))))
    (y1, h1, g1), (y2, h2, g2) = results
    assert y1.shape == (T, N, V) and h1.shape == (L, N, H)
    assert sym_rel_err(y1, y2) < 1e-13 and sym_rel_err(h1, h2) < 1e-13
    for (name, _), a, b in zip(ours.named_parameters(), g1, g2, strict=True):
        diffs("charlm CharRNN vs TorchCharRNN grads (rel, f64)", sym_rel_err(a, b))
        assert sym_rel_err(a, b) < 1e-12, name


def test_state_dicts_load_both_ways():
    ours, theirs = _twins(1, vocab_size=9, embedding_dim=4, hidden_size=6)
    torch.manual_seed(2)
    fresh = CharRNN(9, 4, 6).to(f64)
    fresh.load_state_dict(theirs.state_dict())
    ids = torch.randint(9, (5, 2))
    assert torch.equal(fresh(ids)[0], ours(ids)[0])
    theirs.load_state_dict(fresh.state_dict())


def test_dropout_in_training_only():
    torch.manual_seed(0)
    model = CharRNN(8, 4, 16, num_layers=2, dropout=0.5)
    ids = torch.randint(8, (6, 3))
    model.eval()
    a, b = model(ids)[0], model(ids)[0]
    assert torch.equal(a, b)  # eval: deterministic
    model.train()
    c = model(ids)[0]
    assert not torch.allclose(a, c)
    (dW,) = torch.autograd.grad(cross_entropy(c, ids), [model.head.weight])
    assert torch.isfinite(dW).all()


@pytest.mark.parametrize(
    "bad",
    [dict(vocab_size=0), dict(hidden_size=0), dict(hidden_size=-3), dict(num_layers=0),
     dict(embedding_dim=-1), dict(dropout=1.0), dict(dropout=-0.1)],
)
def test_config_rejects_bad_sizes(bad):
    kwargs = dict(vocab_size=5, embedding_dim=2, hidden_size=4) | bad
    with pytest.raises(ValueError):
        CharRNNConfig(**kwargs)


def test_generate_uses_the_vocabulary_and_is_reproducible():
    torch.manual_seed(0)
    V = 12
    model = CharRNN(V, 4, 16)
    prompt = torch.tensor([1, 2, 3])

    def sample(seed, **kw):
        return generate(model, prompt, 200, generator=torch.Generator().manual_seed(seed), **kw)

    a, b, c = sample(5), sample(5), sample(6)
    assert a.shape == (200,) and a.dtype == torch.long
    assert ((a >= 0) & (a < V)).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training  # restored
    # top-k = 1 is greedy decoding: the argmax at every step, whatever the seed
    greedy = sample(1, top_k=1)
    assert torch.equal(greedy, sample(2, top_k=1))
    logits, h = model.eval()(prompt.unsqueeze(1))
    expected = []
    y = logits[-1, 0]
    with torch.no_grad():
        for _ in range(200):
            c = y.argmax()
            expected.append(c.item())
            logits, h = model(c.view(1, 1), h)
            y = logits[0, 0]
    assert greedy.tolist() == expected
    # top-k = 3 only ever picks one of the 3 likeliest first characters
    top3 = set(torch.topk(model(prompt.unsqueeze(1))[0][-1, 0], 3).indices.tolist())
    firsts = {generate(model, prompt, 1, 2.0, 3, torch.Generator().manual_seed(s)).item() for s in range(60)}
    assert firsts <= top3 and len(firsts) > 1


@pytest.mark.parametrize(("kw", "match"), [
    (dict(temperature=-1e-9), "temperature"), (dict(temperature=-1.0), "temperature"),
    (dict(top_k=0), "top-k"),
])
def test_generate_rejects_bad_arguments(kw, match):
    model = CharRNN(5, 2, 4)
    with pytest.raises(ValueError, match=match):
        generate(model, torch.tensor([0]), 3, **kw)
    with pytest.raises(ValueError, match="prompt"):
        generate(model, torch.tensor([], dtype=torch.long), 3)


def test_double_backward_through_the_heads_equals_autograd(diffs):
    # This test used to assert that double backward raises. The heads' backwards are now
    # differentiable torch code, so the second derivative (autograd applied to our hand-written
    # rules) must equal torch's own, also when the loss reaches h another way too.
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 4, dtype=f64, generator=g)
    W = torch.randn(5, 4, dtype=f64, generator=g)
    b = torch.randn(5, dtype=f64, generator=g)
    W_emb = torch.randn(5, 4, dtype=f64, generator=g)
    ids = torch.randint(0, 5, (6,), generator=g)
    targets = torch.randint(0, 5, (6,), generator=g)
    m = torch.rand(6, 4, dtype=f64, generator=g)
    results = []
    for ours in (True, False):
        leaves = [t.clone().requires_grad_() for t in (h, W, b, W_emb)]
        h_, W_, b_, W_emb_ = leaves
        if ours:
            x = _Dropout.apply(h_ + _Embedding.apply(ids, W_emb_), m)
            loss = cross_entropy(_Linear.apply(x, W_, b_), targets)
        else:
            loss = F.cross_entropy(F.linear((h_ + F.embedding(ids, W_emb_)) * m, W_, b_), targets)
        loss = loss + h_.pow(3).sum()
        first = torch.autograd.grad(loss, leaves, create_graph=True)
        results.append(torch.autograd.grad(sum(d.pow(2).sum() for d in first), leaves))
    worst = max(sym_rel_err(a, b) for a, b in zip(*results, strict=True))
    diffs("float64 relative vs autograd: heads' second derivatives", worst)
    assert worst <= 1e-10


def test_temperature_zero_is_greedy_and_the_modules_print_as_torchs():
    torch.manual_seed(0)
    model = CharRNN(7, 3, 8)
    prompt = torch.tensor([1, 2])
    ids = generate(model, prompt, 12, temperature=0.0)
    seq = prompt.tolist()
    for _ in range(12):  # the likeliest next character, every time
        seq.append(model(torch.tensor(seq).unsqueeze(1))[0][-1, 0].argmax().item())
    assert ids.tolist() == seq[2:]
    # print(model) once showed (embedding): Module() and (head): Module()
    assert "Module()" not in repr(model) and repr(model) == repr(TorchCharRNN(7, 3, 8)).replace(
        "TorchCharRNN", "CharRNN").replace("  (drop): Dropout(p=0.0, inplace=False)\n", "").replace(
        "(rnn): RNN(", "(rnn): scratchrnn.RNN(")  # ours names itself (issue 21)
