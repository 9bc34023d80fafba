"""CharRNN under torch.compile, torch.export and double backward, against eager mode and against
TorchCharRNN (the same model from torch's parts)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import max_abs, rel_err

from scratchrnn.lm.model import CharRNN, TorchCharRNN, cross_entropy

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    # Dynamo, tracing any autograd.Function (the heads'), instantiates it, which torch deprecates
    pytest.mark.filterwarnings("ignore:.*autograd.function.Function'> should not be instantiated"),
]

V = 11


def batch(T: int = 6, N: int = 3):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(V, (T + 1, N), generator=g)
    return ids[:-1], ids[1:]


def loss_fn(model, ids, targets):
    logits, _ = model(ids)
    return cross_entropy(logits, targets)


@pytest.mark.parametrize("embedding_dim", [5, 0], ids=["embedding", "one-hot"])
def test_explain_finds_one_graph_and_no_break(embedding_dim):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = CharRNN(V, embedding_dim, 8, num_layers=2)
    explanation = torch._dynamo.explain(loss_fn)(model, *batch())
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


def test_compiled_training_step_equals_eager(diffs):
    # float32 through inductor (its fused kernels round differently from eager: relative 1e-5).
    torch._dynamo.reset()
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = CharRNN(V, 5, 16, num_layers=2, dropout=0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        step_loss = torch.compile(loss_fn, fullgraph=True) if compiled else loss_fn
        losses = []
        for _ in range(3):
            optimizer.zero_grad()
            loss = step_loss(model, *batch())
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        results.append([torch.stack(losses), *(p.detach() for p in model.parameters())])
    worst = max(rel_err(a, b) for a, b in zip(*results, strict=True))
    diffs("float32 relative, compiled CharRNN training vs eager", worst)
    assert worst <= 1e-5
    assert results[1][0][-1] < results[1][0][0]  # and it trains


@pytest.mark.parametrize("num_layers", [1, 2])
def test_export_save_load_run_equals_eager(num_layers, tmp_path, diffs):
    torch.manual_seed(0)
    model = CharRNN(V, 5, 8, num_layers=num_layers).double().eval()
    ids, _ = batch()
    h0 = torch.randn(num_layers, 3, 8, dtype=torch.float64)
    T, N = torch.export.Dim("T", min=1), torch.export.Dim("N", min=1)
    program = torch.export.export(model, (ids, h0), dynamic_shapes=({0: T, 1: N}, {1: N}))
    torch.export.save(program, tmp_path / "charrnn.pt2")
    loaded = torch.export.load(tmp_path / "charrnn.pt2").module()
    worst = 0.0
    for T_, N_ in ((6, 3), (1, 1), (9, 4)):
        ids = torch.randint(V, (T_, N_), generator=torch.Generator().manual_seed(T_))
        h0 = torch.randn(num_layers, N_, 8, dtype=torch.float64)
        worst = max(worst, *(max_abs(a, b) for a, b in zip(loaded(ids, h0), model(ids, h0), strict=True)))
    diffs("float64 max abs, exported CharRNN vs eager", worst)
    assert worst <= 1e-10


def test_gradient_penalty_equals_torch_char_rnn(diffs):
    # L = CE + ‖∂CE/∂W_hh‖²: second derivatives through the heads, the RNN and the embedding.
    results = []
    for cls in (CharRNN, TorchCharRNN):
        torch.manual_seed(0)
        model = cls(V, 5, 8, num_layers=2).double()
        ids, targets = batch()
        logits, _ = model(ids)
        ce = cross_entropy if cls is CharRNN else F.cross_entropy
        loss = ce(logits.reshape(-1, V), targets.reshape(-1))
        (dW_hh,) = torch.autograd.grad(loss, model.rnn.weight_hh_l0, create_graph=True)
        results.append(torch.autograd.grad(loss + dW_hh.pow(2).sum(), list(model.parameters())))
    worst = max(max_abs(a, b) for a, b in zip(*results, strict=True))
    diffs("float64 max abs vs TorchCharRNN: gradient penalty", worst)
    assert worst <= 1e-10
