"""Fuzz cases for the C loop's validation door (issue 18 item 1), run as a script:

    python tests/core/accel_fuzz.py [EXAMPLES]

by tests/core/test_accel_safety.py in a subprocess, so that a crash (a segfault, an
AddressSanitizer report) fails that test instead of killing pytest; also under ASan there.

Each example builds a scratchrnn.RNN and a torch.nn.RNN (or the two GRUs, where scratchrnn has
one) with the same weights, spoils one thing the same way in both (a parameter replaced by one of
the wrong shape, a non-contiguous view or the wrong dtype; the input or hx likewise), and runs the
forward and backward through the C loop and the PyTorch loop. Each loop must raise a Python
exception or give torch's result; never crash, never return something torch refuses to compute.
"""

from __future__ import annotations

import sys
import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import scratchrnn
from scratchrnn.core import accel

H_CHOICES = [1, 3, 8, 40]
# (ours, torch's) per kind of module; the GRU where this scratchrnn has one (the C loop has its steps)
KINDS = {"rnn": (scratchrnn.RNN, torch.nn.RNN)}
if hasattr(scratchrnn, "GRU"):
    KINDS["gru"] = (scratchrnn.GRU, torch.nn.GRU)


@st.composite
def cases(draw):
    case = {
        "kind": draw(st.sampled_from(sorted(KINDS))),
        "D": draw(st.integers(1, 4)), "H": draw(st.sampled_from(H_CHOICES)), "L": draw(st.integers(1, 2)),
        "bidirectional": draw(st.booleans()), "bias": draw(st.booleans()),
        "nonlinearity": draw(st.sampled_from(["tanh", "relu"])), "packed": draw(st.booleans()),
        "T": draw(st.integers(1, 4)), "N": draw(st.integers(1, 3)),
        "dtype": draw(st.sampled_from([torch.float64, torch.float32])),
    }
    dirs = 2 if case["bidirectional"] else 1
    names = [f"{w}_l{k}{s}" for k in range(case["L"]) for s in ("", "_reverse")[:dirs]
             for w in ("weight_ih", "weight_hh", *(("bias_ih", "bias_hh") if case["bias"] else ()))]
    case["target"] = draw(st.sampled_from([*names, "input", "hx"]))
    case["mutation"] = draw(st.sampled_from(["shape", "shape", "non-contiguous", "dtype", "none"]))
    H = case["H"]
    case["shape"] = draw(st.one_of(
        st.sampled_from([(H, 1), (1, H), (H + 1, H), (H, H + 1), (H,), (0, H), (2 * H, H)]),
        st.lists(st.integers(0, 2 * H + 1), min_size=0, max_size=3).map(tuple)))
    case["seed"] = draw(st.integers(0, 2**16))
    return case


def _spoil(t: torch.Tensor, mutation: str, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    if mutation == "shape":
        return torch.randn(shape, generator=g, dtype=t.dtype)
    if mutation == "non-contiguous":  # the same values, every other element of a wider buffer
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype) if t.dim() else t.clone()
        if t.dim():
            wide[..., ::2] = t
            return wide[..., ::2]
        return wide
    if mutation == "dtype":
        return t.to(torch.float32 if t.dtype == torch.float64 else torch.float64)
    return t


def _run(model, x, hx, lengths):
    """Output, h_n and the gradients of x, hx and the parameters (summed output as the loss)."""
    inputs = pack_padded_sequence(x, lengths) if lengths is not None else x
    output, h_n = model(inputs, hx)
    data = output.data if lengths is not None else output
    leaves = [t for t in (x, hx, *model.parameters()) if t.requires_grad]
    grads = torch.autograd.grad(data.sum() + h_n.sum(), leaves, allow_unused=True)
    return [data, h_n, *(g for g in grads if g is not None)]


def check(case) -> None:
    D, H, L, T, N, dtype = (case[k] for k in ("D", "H", "L", "T", "N", "dtype"))
    dirs = 2 if case["bidirectional"] else 1
    torch.manual_seed(case["seed"])
    kwargs = {k: case[k] for k in ("bias", "bidirectional")} | {"dtype": dtype}
    if case["kind"] == "rnn":
        kwargs["nonlinearity"] = case["nonlinearity"]
    ours_class, torch_class = KINDS[case["kind"]]
    ours, oracle = ours_class(D, H, L, **kwargs), torch_class(D, H, L, **kwargs)
    oracle.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(T, N, D, generator=g, dtype=dtype)
    hx = torch.randn(L * dirs, N, H, generator=g, dtype=dtype)
    target, mutation = case["target"], case["mutation"]
    torch_refuses = False
    if target == "input":
        x = _spoil(x, mutation, case["shape"], g)
    elif target == "hx":
        hx = _spoil(hx, mutation, case["shape"], g)
    else:
        good_shape = getattr(ours, target).shape
        bad = _spoil(getattr(ours, target).detach(), mutation, case["shape"], g)
        # torch.nn.GRU itself segfaults on some weights of the wrong shape (torch 2.13: a GRU's
        # weight_ih_l0 of (1, 1) for (3, 1)): it is not asked, and counts as refusing them.
        torch_refuses = case["kind"] == "gru" and bad.shape != good_shape
        for model in (ours, oracle):
            setattr(model, target, torch.nn.Parameter(bad.clone() if bad.is_contiguous() else bad))
    lengths = None
    if case["packed"]:
        lengths = sorted(torch.randint(1, T + 1, (N,), generator=g).tolist(), reverse=True)
    if lengths is not None and x.dim() == 3 and x.shape[:2] != (T, N):
        lengths = None  # a spoiled input shape: no lengths to pack it by
    x.requires_grad_(x.is_floating_point())
    hx.requires_grad_(hx.is_floating_point())

    try:
        if torch_refuses:
            raise RuntimeError("not asked")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nn.RNN's "weights are not part of single contiguous chunk"
            expected = _run(oracle, x, hx, lengths)
    except Exception:
        expected = None
    tol = {"atol": 1e-9, "rtol": 1e-9} if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    for c_loop in (True, False):
        accel.set_enabled(c_loop)
        try:
            got = _run(ours, x, hx, lengths)
        except Exception:
            continue  # refused, as it may be
        finally:
            accel.set_enabled(True)
        loop = "C" if c_loop else "PyTorch"
        assert expected is not None, f"{loop} loop computed what nn.RNN refuses: {case}"
        assert len(got) == len(expected), f"{loop} loop: {len(got)} results, nn.RNN {len(expected)}: {case}"
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, **tol, equal_nan=True, check_dtype=True,
                                       msg=lambda m, loop=loop: f"{loop} loop, {case}: {m}")


def main(examples: int) -> None:
    assert accel.available(), "the C loop does not build here"

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(cases())
    def fuzz(case):
        check(case)

    fuzz()
    print(f"{examples} fuzz examples: no crash, every result nn.RNN's")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
