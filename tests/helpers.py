"""Helpers shared by the test modules (imported as ``helpers``: tests/ is on sys.path through its
conftest.py). Fixtures shared by several modules live in conftest.py."""

from __future__ import annotations

import torch
from torch import Tensor

F64 = torch.float64
ABS_TOL_F64 = 1e-10  # float64 agreement asked of the transforms (jvp, hessian, vmap, compile, export)


def max_abs(a: Tensor, b: Tensor) -> float:
    """max |a − b| (0 for empty tensors); the shapes must agree."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item() if a.numel() else 0.0


def rel_err(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max |b|: a normwise relative error against the oracle b that ignores b's
    near-zero entries."""
    assert a.shape == b.shape, (a.shape, b.shape)
    if not a.numel():
        return 0.0
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / (scale if scale > 0 else 1.0)


def sym_rel_err(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max(|a|, |b|, tiny): torch-rnn's relative-error metric, over the whole tensor."""
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-300)
    return ((a - b).abs().max() / scale).item()
