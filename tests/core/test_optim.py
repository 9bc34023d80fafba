"""Each hand-written optimizer against its torch.optim twin, and clipping against torch's."""

from __future__ import annotations

import pytest
import torch

from scratchrnn.core import optim

f64 = torch.float64
STEPS = 12

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=1e-2, initial_accumulator_value=0.1)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=3e-3, betas=(0.85, 0.95), weight_decay=0.1)),
]


def _params(dtype):
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (3,), (4, 4, 2), (1,)]
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def _gradients(params, step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) * (1 + step) for p in params]


def _run(cls, kwargs, dtype, steps=STEPS, params=None):
    params = params or _params(dtype)
    opt = cls(params, **kwargs)
    history = []
    for step in range(steps):
        # the gradient depends on the parameters, as a real one does (so drifts would compound)
        for p, g in zip(params, _gradients(params, step), strict=True):
            p.grad = g + 0.1 * p.detach()
        opt.step()
        history.append([p.detach().clone() for p in params])
    return history, opt


@pytest.mark.parametrize("dtype", [f64, torch.float32])
@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_matches_torch_optim(name, kwargs, dtype, diffs):
    ours, _ = _run(getattr(optim, name), kwargs, dtype)
    theirs, _ = _run(getattr(torch.optim, name), kwargs, dtype)
    tol = 1e-13 if dtype == f64 else 1e-5
    for step, (a_list, b_list) in enumerate(zip(ours, theirs, strict=True)):
        for a, b in zip(a_list, b_list, strict=True):
            err = ((a - b).abs().max() / b.abs().max()).item()
            diffs(f"optim {name} vs torch.optim ({'f64' if dtype == f64 else 'f32'}, rel)", err)
            assert err < tol, f"step {step + 1}"


def test_defaults_match_torch_optim():
    for name in ("SGD", "Adagrad", "Adam", "AdamW"):
        ours = getattr(optim, name)([torch.zeros(1, requires_grad=True)]).defaults
        theirs = getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)]).defaults
        assert {k: theirs[k] for k in ours} == ours, name


@pytest.mark.parametrize(("name", "kwargs"), CASES[1:2] + CASES[5:6] + CASES[7:8] + CASES[9:10])
def test_state_dict_resumes_exactly(name, kwargs):
    cls = getattr(optim, name)
    straight, _ = _run(cls, kwargs, f64)
    params = _params(f64)
    _, first = _run(cls, kwargs, f64, steps=5, params=params)
    saved = first.state_dict()
    opt = cls(params, **kwargs)
    opt.load_state_dict(saved)
    for step in range(5, STEPS):
        for p, g in zip(params, _gradients(params, step), strict=True):
            p.grad = g + 0.1 * p.detach()
        opt.step()
    for a, b in zip(params, straight[-1], strict=True):
        assert torch.equal(a.detach(), b)


def test_parameters_without_gradients_are_left_alone():
    a, b = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(2)) and not torch.equal(a.detach(), torch.ones(3))


@pytest.mark.parametrize("lr", [0.0, -1e-3, float("nan"), float("inf")])
def test_rejects_bad_learning_rates(lr):
    for cls in (optim.SGD, optim.Adagrad, optim.Adam, optim.AdamW):
        with pytest.raises(ValueError, match="learning rate"):
            cls([torch.zeros(1, requires_grad=True)], lr=lr)


def test_make_optimizer():
    p = [torch.zeros(2, requires_grad=True)]
    assert isinstance(optim.make_optimizer("adamw", p, 1e-3), optim.AdamW)
    sgd = optim.make_optimizer("sgd", p, 0.1, momentum=0.5)
    assert isinstance(sgd, optim.SGD) and sgd.defaults["momentum"] == 0.5
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'"):
        optim.make_optimizer("rmsprop", p, 1e-3)


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e6])  # clipped hard, a little, not at all
@pytest.mark.parametrize("dtype", [f64, torch.float32])
def test_clip_grad_norm_matches_torch(max_norm, dtype, diffs):
    ours, theirs = _params(dtype), _params(dtype)
    for a, b, g in zip(ours, theirs, _gradients(ours, 0), strict=True):
        a.grad, b.grad = g.clone(), g.clone()
    ours.append(torch.zeros(2, dtype=dtype, requires_grad=True))  # no .grad: skipped
    norm = optim.clip_grad_norm_(ours, max_norm)
    norm_ref = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    tol = 1e-14 if dtype == f64 else 1e-6
    assert abs(norm.item() - norm_ref.item()) <= tol * norm_ref.item()
    for a, b in zip(ours, theirs, strict=False):
        err = ((a.grad - b.grad).abs().max() / b.grad.abs().max()).item()
        diffs("optim clip_grad_norm_ vs torch (rel)", err)
        assert err < tol
    total = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in ours[:-1]))
    assert total.item() <= min(max_norm, norm_ref.item()) * (1 + 1e-6)


def test_torch_optim_works_with_our_model():
    from scratchrnn.lm.model import CharRNN, cross_entropy

    torch.manual_seed(0)
    model = CharRNN(6, 3, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = torch.randint(6, (12, 2))
    losses = []
    for _ in range(30):
        loss = cross_entropy(model(ids[:-1])[0], ids[1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
