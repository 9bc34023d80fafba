"""The benchmark compares like with like, and its command writes a well-formed report.

Every variant the benchmark times is checked here on small shapes in float64: scratchrnn.RNN and
the naive loop against torch.nn.RNN (output and every gradient), and the GEMM floor against an
autograd loop of the linear RNN it computes; the GRU peers against torch.nn.GRU. Letters: T steps,
N batch, D inputs, H hidden, L layers.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from scratchrnn.apps import cli
from scratchrnn.apps.bench import gru as gru_bench
from scratchrnn.apps.bench import peers
from scratchrnn.apps.bench import rnn as bench
from scratchrnn.apps.bench.rnn import Case, Shape
from scratchrnn.core import modules
from scratchrnn.core.functional import rnn_forward

TARGETS = Path(__file__).resolve().parents[2] / "benchmarks" / "targets.toml"

SHAPES = [
    Shape(5, 3, 4, 6, 1),
    Shape(1, 1, 2, 3, 2),  # T = 1, N = 1
    Shape(4, 2, 3, 5, 2, bidirectional=True),
    Shape(3, 2, 3, 4, 1, bidirectional=True),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_variants_match_nn_rnn(shape, diffs):
    """scratchrnn.RNN and the naive loop compute nn.RNN's output and gradients, in both modes."""
    case = Case(shape, dtype=torch.float64)
    expected = case.runner("nn.RNN", "fwd")()
    for variant in ("scratchrnn", "naive"):
        got = case.runner(variant, "fwd")()
        diffs("bench: output vs nn.RNN", (got - expected).abs().max().item())
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)

    grads = {}
    for variant in ("nn.RNN", "scratchrnn", "naive"):
        case.zero_grad()
        output = case.runner(variant, "fwd+bwd")()
        torch.testing.assert_close(output.detach(), expected, rtol=0, atol=1e-10)
        grads[variant] = [t.grad.clone() for t in case.leaves(variant)]
    for variant in ("scratchrnn", "naive"):
        assert len(grads[variant]) == len(grads["nn.RNN"])
        for got, want in zip(grads[variant], grads["nn.RNN"], strict=True):
            diffs("bench: gradient vs nn.RNN", (got - want).abs().max().item())
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def _reference_rnn(x, weights, shape, act=None):
    """The oracle: the stacked RNN on autograd, layer by layer (act None: the identity, a linear RNN).

    Returns the output (T, N, dirs * H) and, per layer and direction, the list of pre-activations
    a_t, each retaining its gradient.
    """
    dirs = 2 if shape.bidirectional else 1
    layer_in, pre = x, []
    for layer in range(shape.layers):
        outs = []
        for d in range(dirs):
            W_ih, W_hh, b_ih, b_hh = weights[(layer * dirs + d) * 4 : (layer * dirs + d + 1) * 4]
            h = x.new_zeros(shape.N, shape.H)
            steps = range(shape.T) if d == 0 else reversed(range(shape.T))
            out, a = [None] * shape.T, [None] * shape.T
            for t in steps:
                a[t] = layer_in[t] @ W_ih.t() + b_ih + h @ W_hh.t() + b_hh
                a[t].retain_grad()
                h = a[t] if act is None else act(a[t])
                out[t] = h
            outs.append(torch.stack(out))
            pre.append(a)
        layer_in = torch.cat(outs, dim=-1)
    return layer_in, pre


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_floor_computes_linear_rnn_and_its_gradients(shape, diffs):
    """The floor's GEMMs, with no elementwise work, are exactly a linear RNN's forward and BPTT."""
    case = Case(shape, dtype=torch.float64)
    floor = case.floor
    output = floor.forward().clone()
    dx, per_cell = floor.backward()

    x = case.x.clone().requires_grad_()
    weights = [w.detach().clone().requires_grad_() for w in case.ours._flat_weights]
    expected, _ = _reference_rnn(x, weights, shape)
    expected.sum().backward()
    pairs = [(output, expected.reshape(output.shape)), (dx, x.grad.reshape(dx.shape))]
    for idx, (dW_ih, dW_hh, _) in enumerate(per_cell):
        pairs += [(dW_ih, weights[4 * idx].grad), (dW_hh, weights[4 * idx + 1].grad)]
    for got, want in pairs:
        diffs("bench: floor vs linear RNN", (got - want).abs().max().item())
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batched_gemms_are_the_rnn_gemms(shape, diffs):
    """Fed a real run's h_t and da_t, the batched GEMMs give its pre-activations and gradients."""
    case = Case(shape, dtype=torch.float64)
    x = case.x.clone().requires_grad_()
    weights = [w.detach().clone().requires_grad_() for w in case.ours._flat_weights]
    output, pre = _reference_rnn(x, weights, shape, torch.tanh)
    output.sum().backward()
    da = [torch.stack([a.grad for a in cell]).reshape(-1, shape.H) for cell in pre]
    dirs = 2 if shape.bidirectional else 1
    with torch.no_grad():
        layer_outputs = rnn_forward(
            case.x.reshape(-1, shape.D), case.h0, weights, [shape.N] * shape.T,
            num_layers=shape.layers, bidirectional=shape.bidirectional, bias=True,
        ).layer_outputs
    gemms = bench.BatchedGemms(weights, case.x, shape, layer_outputs, da)

    outs = gemms.forward()
    dx, per_cell = gemms.backward()
    pairs = [(dx, x.grad.reshape(dx.shape))]
    for layer, out in enumerate(outs):
        pairs.append((out.tanh(), layer_outputs[layer]))
        cells = [pre[layer * dirs + d] for d in range(dirs)]
        pairs.append((out, torch.cat([torch.stack(c).reshape(-1, shape.H) for c in cells], dim=1).detach()))
    for idx, (dW_ih, dW_hh, dh_next) in enumerate(per_cell):
        pairs += [(dW_ih, weights[4 * idx].grad), (dW_hh, weights[4 * idx + 1].grad)]
        pairs.append((dh_next, (da[idx] @ weights[4 * idx + 1].detach()).reshape(dh_next.shape)))
    for got, want in pairs:
        diffs("bench: batched GEMMs vs autograd", (got - want).abs().max().item())
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def _parse_table(text: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """The markdown table under ``heading``: its header cells and rows of cells."""
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    head, sep, rows = cells[0], cells[1], cells[2:]
    assert all(c == "---" for c in sep) and len(sep) == len(head)
    assert all(len(row) == len(head) for row in rows)
    return head, rows


def test_quick_bench_is_a_smoke_test_and_the_full_report_is_well_formed(tmp_path, capsys, monkeypatch):
    # --quick once printed targets, verdicts ("no" on 8 of 10), 0 GFLOP/s and 0.0 MiB ratios at toy
    # shapes: it now says what ran, in one line and a table of medians. The full report is
    # checked below on the same measurements.
    measured = []
    real = bench.measure_all
    monkeypatch.setattr(bench, "measure_all", lambda *a: measured.append(real(*a)) or measured[-1])
    out = tmp_path / "RESULTS.md"
    argv = ["--quick", "--threads", "1", "--cells", "rnn", "--targets", str(TARGETS), "--out", str(out)]
    assert cli.main(["bench", *argv]) == 0
    smoke = out.read_text()
    assert capsys.readouterr().out.strip() == smoke.strip()
    command = f"scratchrnn bench {' '.join(argv)}"
    title = "# scratchrnn bench --quick: a smoke test"
    assert smoke.startswith(f"{title}\n\n`{command}`: a smoke test, not a benchmark")
    for verdict in ("Target", "**no**", "GFLOP/s", "MiB", "×", "Geometric", "% of"):
        assert verdict not in smoke
    _, rows = _parse_table(smoke, "a smoke test")
    assert len(rows) == len(bench.QUICK_SHAPES) * len(bench.MODES)
    assert all(float(c) > 0 for r in rows for c in r[3:])
    assert len(smoke.splitlines()) < 20

    targets = bench.load_targets(TARGETS)
    text = bench.report(measured[0], bench.QUICK_SHAPES, [1], 2, bench.QUICK_MEMORY_SHAPE, "scratchrnn bench",
                        targets)
    assert "Written by `scratchrnn bench`" in text
    assert torch.__version__ in text

    head, rows = _parse_table(text, "## Speed")
    assert head[:3] == ["threads", "shape (T, N, D, H, L)", "mode"]
    assert len(rows) == len(bench.QUICK_SHAPES) * len(bench.MODES)
    for row in rows:
        assert row[0] == "1"
        times = [float(c) for c in row[3:8]]  # one median per variant, in ms
        ratios = [float(c.rstrip("×")) for c in row[8:12]]
        assert all(t > 0 for t in times) and all(r > 0 for r in ratios)
        assert re.fullmatch(r"\d+%", row[12])
    assert {(r[1], r[2]) for r in rows} == {(str(s), m) for s in bench.QUICK_SHAPES for m in bench.MODES}

    _, checks = _parse_table(text, "## Targets")
    assert len(checks) == 6 + len(bench.MODES)  # the last ones: ahead of every peer, per mode
    assert all(c[2] in ("yes", "**no**") for c in checks)
    head, peer_rows = _parse_table(text, "Median ms per call")
    assert head[3:5] == ["scratchrnn ms", "nn.RNN ms"] and "torch.compile ms" not in head  # quick: no compile
    assert len(peer_rows) == len(bench.MODES)  # one thread, the one one-layer quick shape
    assert all(float(r[3]) > 0 and float(r[4]) > 0 and re.fullmatch(r"\d+%", r[-2]) for r in peer_rows)
    _, memory = _parse_table(text, "## Peak memory")
    assert [r[0] for r in memory] == list(bench.MEMORY_VARIANTS)
    assert all(float(r[1]) >= 0 for r in memory)


@pytest.mark.parametrize(
    "argv",
    [
        ["--rounds", "0"],
        ["--threads", "0"],
        ["--shape", "1,2,3"],
        ["--shape", "4,2,3,5,1,uni"],
        ["--out", "no/such/dir/RESULTS.md"],
        ["--targets", "no/such/targets.toml"],
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    assert cli.main(["bench", "--no-memory", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchrnn bench: error: ") and "\n" not in err


def _oracle(w: peers.Weights):
    """nn.RNN's output and gradients of output.sum() (x, W_ih, W_hh, b) for the peers' weights."""
    rnn = torch.nn.RNN(w.x.shape[2], w.W_hh.shape[0])
    rnn.load_state_dict({"weight_ih_l0": w.W_ih, "weight_hh_l0": w.W_hh, "bias_ih_l0": w.b_ih,
                         "bias_hh_l0": w.b_hh})
    x = w.x.clone().requires_grad_()
    y = rnn(x)[0]
    y.sum().backward()
    return y.detach(), x.grad, rnn.weight_ih_l0.grad, rnn.weight_hh_l0.grad, rnn.bias_ih_l0.grad


def _peer_or_skip(make):
    try:
        return make()
    except peers.PeerUnavailable as err:
        pytest.skip(str(err))


PEER_TOL = {"rtol": 1e-4, "atol": 1e-5}  # float32, different summation orders


def test_onednn_peer_computes_nn_rnn():
    w = peers.Weights.make((7, 3, 4, 5))
    onednn = _peer_or_skip(lambda: peers.OneDnnPeer(w, 1))
    y, dx, dW_ih, dW_hh, db = _oracle(w)
    torch.testing.assert_close(onednn.forward(), y, **PEER_TOL)
    grads = onednn.forward_backward()
    torch.testing.assert_close(onednn.buffers["y"], y, **PEER_TOL)
    for name, want in (("dx", dx), ("dW_ih", dW_ih), ("dW_hh", dW_hh), ("db", db)):
        torch.testing.assert_close(grads[name], want, **PEER_TOL)
    grads = onednn.forward_backward()  # again: the weight gradients are zeroed, not accumulated
    torch.testing.assert_close(grads["dW_hh"], dW_hh, **PEER_TOL)


def test_jax_peer_computes_nn_rnn():
    w = peers.Weights.make((7, 3, 4, 5))
    jax_peer = _peer_or_skip(lambda: peers.JaxPeer(w))
    y, dx, dW_ih, dW_hh, db = _oracle(w)
    torch.testing.assert_close(jax_peer.output(), y, **PEER_TOL)
    (g_W_ih, g_W_hh, g_b), g_x = jax_peer.grad(jax_peer.params, jax_peer.x)
    for got, want in ((g_x, dx), (g_W_ih, dW_ih), (g_W_hh, dW_hh), (g_b, db)):
        torch.testing.assert_close(torch.from_numpy(jax_peer.jax.device_get(got).copy()), want, **PEER_TOL)


def test_the_loop_torch_compile_is_given_computes_nn_rnn():
    w = peers.Weights.make((7, 3, 4, 5))
    y = _oracle(w)[0]
    h0 = w.x.new_zeros(3, 5)
    torch.testing.assert_close(peers.hoisted_loop(w.x, h0, w.W_ih, w.W_hh, w.b_ih + w.b_hh), y, **PEER_TOL)


def test_flops_count_the_gemms():
    T, N, D, H = 3, 2, 4, 5
    assert peers.flops((T, N, D, H), "fwd") == 2 * T * N * (D * H + H * H)
    assert peers.flops((T, N, D, H), "fwd+bwd") == 3 * peers.flops((T, N, D, H), "fwd")


def test_fma_peak_is_a_plausible_rate():
    rate = _peer_or_skip(lambda: peers.fma_peak(1, rounds=1, seconds=0.02))
    assert 1e8 < rate < 1e13  # flop/s of one core: from an old laptop to far beyond any CPU today


# --------------------------------------------------------------------------------------------
# The targets file, the GRU rows and the GRU peers
# --------------------------------------------------------------------------------------------


def test_the_targets_file_loads_and_a_bad_one_is_refused(tmp_path):
    targets = bench.load_targets(TARGETS)
    assert targets["threads"] == 2 and targets["rnn"]["fwd_bwd_geomean_speedup"] == 2.5
    assert set(targets["gru"]) == set(bench.TARGET_KEYS["gru"])
    bad = tmp_path / "targets.toml"
    bad.write_text(TARGETS.read_text().replace("memory_max_ratio = 1.0", "memory_ratio = 1.0"))
    with pytest.raises(ValueError, match=r"\[gru\] expected"):
        bench.load_targets(bad)
    bad.write_text(TARGETS.read_text().replace("fwd_min_speedup = 1.3", 'fwd_min_speedup = "1.3"'))
    with pytest.raises(ValueError, match="must be numbers"):
        bench.load_targets(bad)


def test_quick_gru_bench_writes_its_rows(tmp_path, capsys, monkeypatch):
    """The GRU rows, their peers and memory; with no scratchrnn.GRU built, nn.GRU's alone and a note.
    --quick prints the smoke report (the variants that ran); the full report is checked on the same
    measurements."""
    measured = []
    real = bench.measure_all
    monkeypatch.setattr(bench, "measure_all", lambda *a: measured.append(real(*a)) or measured[-1])
    out = tmp_path / "RESULTS.md"
    assert cli.main(["bench", "--quick", "--threads", "1", "--cells", "gru", "--targets", str(TARGETS),
                     "--out", str(out)]) == 0
    smoke = out.read_text()
    capsys.readouterr()
    head, _ = _parse_table(smoke, "a smoke test")
    assert head[3:] == [f"{v} ms" for v in gru_bench.available_variants()]
    text = bench.report(measured[0], bench.QUICK_SHAPES, [1], 2, bench.QUICK_MEMORY_SHAPE, "scratchrnn bench",
                        bench.load_targets(TARGETS))
    ours = gru_bench.available_variants() == gru_bench.VARIANTS
    gru_section = text.split("## GRU: scratchrnn.GRU vs torch.nn.GRU", 1)[1]
    head, rows = _parse_table(gru_section, "Median ms per call")
    assert head[:3] == ["threads", "shape (T, N, D, H, L)", "mode"]
    assert head[3:-2] == [f"{v} ms" for v in gru_bench.available_variants()]
    assert len(rows) == len(bench.QUICK_SHAPES) * len(bench.MODES)
    assert all(float(c) > 0 for r in rows for c in r[3:-2])
    _, checks = _parse_table(text, "## Targets")
    assert len(checks) == 3 and all(c[0].startswith("GRU") for c in checks)
    assert all(c[2] in (("yes", "**no**") if ours else ("n/a",)) for c in checks)
    head, peer_rows = _parse_table(text.split("## GRU peers", 1)[1], "Median ms per call")
    assert "nn.GRU ms" in head and len(peer_rows) == len(bench.MODES)
    _, memory = _parse_table(text, "## GRU: peak memory")
    assert [r[0] for r in memory] == list(gru_bench.available_variants())
    if not ours:
        assert gru_bench.NO_GRU in text


class _StandInGRU(torch.nn.GRU):
    """Stands in for scratchrnn.GRU to show the bench picks ours up where the core has one."""


def test_the_gru_rows_light_up_when_scratchrnn_has_a_gru(monkeypatch):
    monkeypatch.setattr(modules, "GRU", _StandInGRU, raising=False)
    assert gru_bench.available_variants() == gru_bench.VARIANTS
    samples = bench.run_timings(bench.QUICK_SHAPES, [1], 1, min_sample_s=0, max_reps=1, cells=["gru"])
    assert {k[3] for k in samples} == set(gru_bench.VARIANTS)
    table = gru_bench.speed_table(samples, bench.QUICK_SHAPES, [1])
    assert "scratchrnn.GRU ms" in table and "–" not in table
    assert "×" in gru_bench.geomean_table(samples, bench.QUICK_SHAPES, [1])
    memory = {v: {"bytes": 100} for v in gru_bench.VARIANTS}
    targets = bench.load_targets(TARGETS)["gru"]
    checks = gru_bench.target_checks(samples, bench.QUICK_SHAPES, [1], memory, targets)
    assert [ok is not None for _, _, ok in checks] == [True] * 3
    assert checks[-1][1:] == ("1.00×", True)


def test_a_gru_that_differs_from_nn_gru_is_not_timed(monkeypatch):
    class Wrong(_StandInGRU):
        def forward(self, x, hx=None):
            output, h_n = super().forward(x, hx)
            return output + 1e-3, h_n

    monkeypatch.setattr(modules, "GRU", Wrong, raising=False)
    with pytest.raises(RuntimeError, match=r"differs from nn\.GRU"):
        gru_bench.GruCase(Shape(5, 3, 4, 6, 1)).check()


def _gru_oracle(w: peers.Weights):
    """nn.GRU's output and gradients of output.sum() for the peers' weights."""
    gru = torch.nn.GRU(w.x.shape[2], w.W_hh.shape[1])
    gru.load_state_dict(w.state_dict)
    x = w.x.clone().requires_grad_()
    y = gru(x)[0]
    y.sum().backward()
    grads = {"dx": x.grad, "dW_ih": gru.weight_ih_l0.grad, "dW_hh": gru.weight_hh_l0.grad,
             "db_ih": gru.bias_ih_l0.grad, "db_hh": gru.bias_hh_l0.grad}
    return y.detach(), grads


def test_onednn_gru_peer_computes_nn_gru():
    """oneDNN's linear-before-reset GRU, gates and biases rearranged, is nn.GRU, gradients included."""
    w = peers.Weights.make((7, 3, 4, 5), cell="gru")
    onednn = _peer_or_skip(lambda: peers.OneDnnPeer(w, 1))
    y, want = _gru_oracle(w)
    torch.testing.assert_close(onednn.forward(), y, **PEER_TOL)
    for _ in range(2):  # twice: the weight gradients are zeroed, not accumulated
        grads = onednn.forward_backward()
        for name, expected in want.items():
            torch.testing.assert_close(grads[name], expected, **PEER_TOL)


def test_jax_gru_peer_computes_nn_gru():
    w = peers.Weights.make((7, 3, 4, 5), cell="gru")
    jax_peer = _peer_or_skip(lambda: peers.JaxPeer(w))
    y, want = _gru_oracle(w)
    torch.testing.assert_close(jax_peer.output(), y, **PEER_TOL)
    (g_W_ih, g_W_hh, g_b_ih, g_b_hh), g_x = jax_peer.grad(jax_peer.params, jax_peer.x)
    got = {"dx": g_x, "dW_ih": g_W_ih, "dW_hh": g_W_hh, "db_ih": g_b_ih, "db_hh": g_b_hh}
    for name, expected in want.items():
        torch.testing.assert_close(torch.from_numpy(jax_peer.jax.device_get(got[name]).copy()), expected,
                                   **PEER_TOL)


def test_the_gru_loop_torch_compile_is_given_computes_nn_gru():
    w = peers.Weights.make((7, 3, 4, 5), cell="gru")
    h0 = w.x.new_zeros(3, 5)
    got = peers.hoisted_gru_loop(w.x, h0, w.W_ih, w.W_hh, w.b_ih, w.b_hh)
    torch.testing.assert_close(got, _gru_oracle(w)[0], **PEER_TOL)


def test_a_peer_whose_output_differs_is_reported_not_timed(monkeypatch):
    _peer_or_skip(lambda: peers.OneDnnPeer(peers.Weights.make((3, 2, 4, 5), cell="gru"), 1))
    monkeypatch.setattr(peers.OneDnnPeer, "output", lambda self: self.forward().clone() + 1e-2)
    cell = peers.build_cell((3, 2, 4, 5), ["nn.GRU", "oneDNN"], 1, "gru")
    assert "differs from nn.GRU's" in cell.missing["oneDNN"]
    assert {p for p, _ in cell.runners} == {"nn.GRU"}


def test_gru_flops_count_three_gates():
    assert peers.flops((3, 2, 4, 5), "fwd", "gru") == 3 * peers.flops((3, 2, 4, 5), "fwd")
