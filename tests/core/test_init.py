"""scratchrnn.core.init: each scheme sets what it says, on ours and on torch's RNNs alike."""

from __future__ import annotations

import math

import pytest
import torch

from scratchrnn import RNN, RNNCell
from scratchrnn.core.init import SCHEMES, default_, identity_, init_rnn_, orthogonal_, small_normal_, xavier_


def _spectral_radius(W: torch.Tensor) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # LAPACK on 2 threads of a busy machine: seconds instead of ms
    try:
        return torch.linalg.eigvals(W.detach().double()).abs().max().item()
    finally:
        torch.set_num_threads(threads)


def test_default_matches_pytorch_draw_for_draw():
    # Same seed, same draws, same order: bit-identical to a fresh torch.nn.RNN.
    torch.manual_seed(3)
    theirs = torch.nn.RNN(5, 7, num_layers=2, bidirectional=True)
    ours = RNN(5, 7, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    default_(ours)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("scheme", list(SCHEMES))
@pytest.mark.parametrize(
    "make",
    [
        lambda: RNN(3, 6, num_layers=2, bidirectional=True, dtype=torch.float64),
        lambda: RNNCell(3, 6, dtype=torch.float64),
        lambda: torch.nn.RNN(3, 6, num_layers=2, dtype=torch.float64),
        lambda: RNN(3, 6, bias=False, dtype=torch.float64),
    ],
    ids=["RNN-2-layer-bi", "RNNCell", "torch.nn.RNN", "RNN-no-bias"],
)
def test_every_scheme_applies_to_every_rnn(scheme, make):
    rnn = make()
    assert init_rnn_(rnn, scheme) is rnn
    H = rnn.hidden_size
    for name, p in rnn.named_parameters():
        assert torch.isfinite(p).all(), name
        if name.startswith("bias"):
            if scheme == "default":
                assert p.abs().max() <= 1 / math.sqrt(H)
            else:
                assert torch.equal(p, torch.zeros_like(p)), name
        elif name.startswith("weight_hh"):
            eye = torch.eye(H, dtype=p.dtype)
            if scheme == "identity":
                assert torch.equal(p, eye)
            if scheme == "orthogonal":
                torch.testing.assert_close(p @ p.t(), eye, rtol=0, atol=1e-12)


def test_distributions_have_the_stated_scale():
    torch.manual_seed(0)
    H, D = 400, 100
    rnn = small_normal_(RNN(D, H, dtype=torch.float64))
    assert rnn.weight_hh_l0.std().item() == pytest.approx(0.01, rel=0.02)
    xavier_(rnn)
    assert rnn.weight_ih_l0.abs().max() <= math.sqrt(6 / (H + D))
    assert rnn.weight_hh_l0.std().item() == pytest.approx(1 / math.sqrt(H), rel=0.02)
    identity_(rnn)
    assert rnn.weight_ih_l0.std().item() == pytest.approx(0.001, rel=0.02)


def test_spectral_radius_follows_the_circular_law():
    # ρ(W_hh) ≈ σ√H for i.i.d. entries of standard deviation σ: the number gradflow explains.
    torch.manual_seed(0)
    H = 128
    rnn = RNN(4, H, dtype=torch.float64)
    assert _spectral_radius(small_normal_(rnn).weight_hh_l0) == pytest.approx(0.01 * math.sqrt(H), rel=0.1)
    assert _spectral_radius(default_(rnn).weight_hh_l0) == pytest.approx(1 / math.sqrt(3), rel=0.1)
    assert _spectral_radius(xavier_(rnn).weight_hh_l0) == pytest.approx(1.0, rel=0.1)
    assert _spectral_radius(orthogonal_(rnn).weight_hh_l0) == pytest.approx(1.0, abs=1e-10)
    assert _spectral_radius(identity_(rnn).weight_hh_l0) == 1.0


def test_irnn_carries_its_state_when_the_input_is_zero():
    # W_hh = I, zero biases, ReLU: a non-negative state passes through unchanged.
    rnn = identity_(RNN(3, 5, nonlinearity="relu", dtype=torch.float64))
    h0 = torch.rand(1, 2, 5, dtype=torch.float64)
    output, h_n = rnn(torch.zeros(10, 2, 3, dtype=torch.float64), h0)
    assert torch.equal(h_n, h0)
    assert torch.equal(output, h0.expand(10, 2, 5))


def test_unknown_scheme_and_non_rnn_modules_are_refused():
    with pytest.raises(ValueError, match=r"Unknown init scheme 'glorot'\. Select from default"):
        init_rnn_(RNN(2, 3), "glorot")
    with pytest.raises(ValueError, match=r"Expected RNN parameters named .*, got 'weight'"):
        small_normal_(torch.nn.Linear(2, 3))
    with pytest.raises(TypeError, match="Expected an RNN module with an int hidden_size, got Linear"):
        default_(torch.nn.Linear(2, 3))
