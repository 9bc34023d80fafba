"""Cases and helpers shared by the tests of scratchrnn.RNN and RNNCell against torch.nn.RNN and
nn.RNNCell, the oracles they must replace (test_rnn_parity.py, _api, _autograd, _dropout, _errors,
_cell; tests/core/ is on sys.path, as tests/ is, because neither is a package).

Every comparison runs in float64 with fixed seeds (float32 only where float32 is the point) and
reports its margin to the ``diffs`` fixture (see conftest.py). Letters: T steps, N batch,
D input features, H hidden units, L layers.

Tolerances: ≤ 1e-10 max abs difference in float64, ≤ 1e-5 relative (max |a − b| / max |b|) in
float32, as the issue asks; never loosened to make a test pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from helpers import max_abs
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from scratchrnn import RNN

F64 = torch.float64
ABS_TOL_F64 = 1e-10
REL_TOL_F32 = 1e-5
D, H = 3, 5
PACKED_LENGTHS = [7, 5, 5, 2, 1, 1]  # sorted, with ties and several sequences of length 1
UNSORTED_LENGTHS = [2, 7, 1, 5, 1, 5]  # the same multiset, in the caller's order


def make_pair(
    input_size: int = D,
    hidden_size: int = H,
    *,
    into: str = "ours",
    dtype: torch.dtype = F64,
    device: str = "cpu",
    **kwargs,
) -> tuple[RNN, nn.RNN]:
    """Our RNN and nn.RNN with the same weights, copied through state_dict.

    ``into="ours"`` loads nn.RNN's state_dict into ours, ``into="nn"`` the other way. Different
    seeds before each construction make sure the copy, not the seed, is what makes them equal.
    """
    torch.manual_seed(0)
    theirs = nn.RNN(input_size, hidden_size, dtype=dtype, device=device, **kwargs)
    torch.manual_seed(1)
    ours = RNN(input_size, hidden_size, dtype=dtype, device=device, **kwargs)
    if into == "ours":
        ours.load_state_dict(theirs.state_dict())
    else:
        theirs.load_state_dict(ours.state_dict())
    for (n_ours, p_ours), (n_theirs, p_theirs) in zip(
        ours.named_parameters(), theirs.named_parameters(), strict=True
    ):
        assert n_ours == n_theirs and torch.equal(p_ours, p_theirs)
    return ours, theirs


def run_with_grads(
    model: nn.Module,
    x: Tensor,
    hx: Tensor | None,
    *,
    lengths: list[int] | None = None,
    enforce_sorted: bool = True,
    grad_seed: int = 1234,
) -> tuple[list[Tensor], list[str]]:
    """Forward, then the gradient of a random linear function of output *and* h_n.

    Returns [output, h_n, dx, (dhx,) d<every parameter>] and their names. The input and hx are
    fresh leaves, so the caller's tensors are untouched; the upstream gradients come from a
    generator seeded with ``grad_seed``, so both models see the same ones.
    """
    x = x.detach().clone().requires_grad_()
    hx = None if hx is None else hx.detach().clone().requires_grad_()
    if lengths is not None:
        inp = pack_padded_sequence(x, lengths, batch_first=model.batch_first, enforce_sorted=enforce_sorted)
    else:
        inp = x
    output, h_n = model(inp) if hx is None else model(inp, hx)
    if lengths is not None:
        assert isinstance(output, PackedSequence)
        assert torch.equal(output.batch_sizes, inp.batch_sizes)
        for ours, theirs in ((output.sorted_indices, inp.sorted_indices),
                             (output.unsorted_indices, inp.unsorted_indices)):
            assert (ours is None and theirs is None) or torch.equal(ours, theirs)
        output = output.data
    # Drawn in float64 on the CPU, then cast and moved: the same numbers for any dtype and device.
    gen = torch.Generator().manual_seed(grad_seed)
    g_out = torch.randn(output.shape, generator=gen, dtype=F64).to(output.device, output.dtype)
    g_hn = torch.randn(h_n.shape, generator=gen, dtype=F64).to(h_n.device, h_n.dtype)
    loss = (output * g_out).sum() + (h_n * g_hn).sum()
    names, leaves = ["x"], [x]
    if hx is not None:
        names.append("hx")
        leaves.append(hx)
    for name, p in model.named_parameters():
        names.append(name)
        leaves.append(p)
    grads = torch.autograd.grad(loss, leaves)
    return [output.detach(), h_n.detach(), *grads], ["output", "h_n", *(f"d{n}" for n in names)]


def compare(
    ours: list[Tensor], theirs: list[Tensor], names: list[str], metric, tol: float, record, key: str
) -> None:
    worst = {name: metric(a, b) for name, a, b in zip(names, ours, theirs, strict=True)}
    for name, value in worst.items():
        record(f"{key}: {'output/h_n' if name in ('output', 'h_n') else 'gradients'}", value)
    failed = {name: value for name, value in worst.items() if not value <= tol}
    assert not failed, f"differences above {tol:g}: {failed}"


def parity(ours: nn.Module, theirs: nn.Module, x: Tensor, hx: Tensor | None, record, **kw) -> None:
    """Outputs, h_n and every gradient of ours equal nn's to ≤ 1e-10 (float64)."""
    got, names = run_with_grads(ours, x, hx, **kw)
    want, names_theirs = run_with_grads(theirs, x, hx, **kw)
    assert names == names_theirs
    compare(got, want, names, max_abs, ABS_TOL_F64, record, "float64 max abs vs nn.RNN")


def make_input(kind: str, batch_first: bool, dirs: int, num_layers: int, hx_given: bool, **factory):
    """(x, hx, run_with_grads kwargs) for one input kind of the grid."""
    L = num_layers * dirs
    if kind == "unbatched":
        x = torch.randn(5, D, **factory)
        hx = torch.randn(L, H, **factory) if hx_given else None
        return x, hx, {}
    T, N = {"padded": (7, 4), "T=1": (1, 3), "N=1": (6, 1)}.get(kind, (7, 6))
    x = torch.randn(N, T, D, **factory) if batch_first else torch.randn(T, N, D, **factory)
    hx = torch.randn(L, N, H, **factory) if hx_given else None
    if kind == "packed":
        return x, hx, {"lengths": PACKED_LENGTHS, "enforce_sorted": True}
    if kind == "packed-unsorted":
        return x, hx, {"lengths": UNSORTED_LENGTHS, "enforce_sorted": False}
    return x, hx, {}


def functional(model: RNN, packed_lengths: list[int] | None = None) -> Callable:
    """The module as a function of (x, hx, *weights), for gradcheck.

    With ``packed_lengths``, x is a PackedSequence's data (rows, D) for those (sorted) lengths.
    """
    names = [n for n, _ in model.named_parameters()]
    batch_sizes = None
    if packed_lengths is not None:
        T = max(packed_lengths)
        dummy = torch.zeros(T, len(packed_lengths), 1)
        batch_sizes = pack_padded_sequence(dummy, packed_lengths).batch_sizes

    def f(x, hx, *weights):
        inp = PackedSequence(x, batch_sizes) if batch_sizes is not None else x
        output, h_n = torch.func.functional_call(model, dict(zip(names, weights, strict=True)), (inp, hx))
        return (output.data if batch_sizes is not None else output), h_n

    return f


def graph_nodes(tensor: Tensor) -> list:
    seen, stack = [], [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return seen
