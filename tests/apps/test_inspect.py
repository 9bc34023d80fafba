"""scratchrnn inspect: the features, the search for units on inputs whose answer is known, the
page's data, the command line, and the page in a real browser (headless Chromium, where present)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from chromium import find_chromium, load, record

import scratchrnn.apps.inspect
from scratchrnn.apps.cli import main
from scratchrnn.apps.inspect import collect, decode_activations, decode_top_ids, render, write
from scratchrnn.apps.inspect.data import layer_states
from scratchrnn.apps.inspect.features import (
    FOUND_R2,
    feature_matrix,
    find_units,
    inside_quotes,
    position_in_line,
    speaker_line,
)
from scratchrnn.lm.data import Vocab, read_text, split_text
from scratchrnn.lm.model import CharRNN

pytestmark = pytest.mark.usefixtures("one_thread")

PLAY = 'FIRST CITIZEN:\nYou say (he said) "no".\n\nMENENIUS:\nI tell you, "most (charitable) care".\n'


def by_feature(entries: list[dict]) -> dict[str, dict]:
    return {e["feature"]: e for e in entries}


def test_features_mark_what_they_say():
    text = 'A "b c" (d)\nE:\nf'
    assert inside_quotes(text).tolist() == [0, 0, 1, 1, 1, 1] + [0] * 10
    assert position_in_line(text).tolist()[11:] == [11, 0, 1, 2, 0]
    assert speaker_line(text).tolist() == [0] * 12 + [1, 1, 0, 0]
    names, f = feature_matrix(text)
    assert f.shape == (len(text), len(names)) == (16, 8)
    brackets = f[:, names.index("inside parentheses/brackets")]
    assert brackets.tolist()[8:12] == [1, 1, 0, 0]  # '(' and 'd' inside; ')' closes


def test_find_units_finds_a_hand_set_quote_unit_among_noise():
    text = PLAY * 40
    rng = np.random.default_rng(0)
    h = rng.uniform(-1, 1, size=(len(text), 16))
    h[:, 11] = np.where(inside_quotes(text) > 0, 1.0, -1.0)  # +1 inside quotes, −1 outside
    found = by_feature(find_units(h, text))
    quotes = found["inside quotes"]
    assert quotes["found"] and quotes["units"][0]["unit"] == 11
    assert quotes["units"][0]["r2"] == pytest.approx(1.0) and quotes["units"][0]["r"] == pytest.approx(1.0)
    assert all(u["r2"] < FOUND_R2 for u in quotes["units"][1:])  # the noise units score ~0
    # The noise units track nothing (in this text, quotes come late in a line, so the quote unit
    # also scores on the position in the line).
    assert {e["units"][0]["unit"] for e in found.values() if e["found"]} == {11}


def test_find_units_says_when_a_feature_never_occurs():
    text = "no marks at all here\n" * 30
    found = by_feature(find_units(np.random.default_rng(1).normal(size=(len(text), 4)), text))
    assert found["inside quotes"]["units"] == [] and not found["inside quotes"]["found"]
    assert "constant" in found["inside quotes"]["reason"]
    with pytest.raises(ValueError, match="one state per character"):
        find_units(np.zeros((3, 4)), text)


def test_the_bundled_corpus_has_no_quotes_or_brackets():
    # The tutorial's "no score for quotes and brackets" rests on this: no unit of a model trained
    # on tiny Shakespeare can track them, on either split (a --text with them loses them too, as
    # the characters are not in the model's vocabulary).
    assert not set('"()[]{}') & set(read_text(None))


def bracket_latch_model(vocab: Vocab) -> CharRNN:
    """A one-hot CharRNN whose unit 2 is a latch, h_t = tanh(3 h_{t-1} + u(c_t) − 0.5): '(' (u = 7)
    sets it near +1, ')' (u = −7) resets it near −1, and W_hh = 3 holds either in between (from
    h_0 = 0 it falls to −1 within two steps). The other units read the input only."""
    torch.manual_seed(0)
    model = CharRNN(len(vocab), embedding_dim=0, hidden_size=5)
    with torch.no_grad():
        rnn = model.rnn
        for p in (rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0):
            p.zero_()
        rnn.weight_ih_l0[2].zero_()
        rnn.weight_ih_l0[2, vocab.stoi["("]] = 7.0
        rnn.weight_ih_l0[2, vocab.stoi[")"]] = -7.0
        rnn.weight_hh_l0[2, 2] = 3.0
        rnn.bias_ih_l0[2] = -0.5
    return model.eval()


def test_collect_finds_the_hand_set_bracket_unit_of_a_real_model():
    text = PLAY * 30
    vocab = Vocab.from_text(text)
    data = collect(bracket_latch_model(vocab), vocab, text, source="a test")
    brackets = by_feature(data["found"])["inside parentheses/brackets"]
    assert brackets["found"] and brackets["units"][0]["unit"] == 2
    assert brackets["units"][0]["r2"] > 0.99
    h = decode_activations(data["activations"])
    assert h.shape == (len(text), 5) and np.abs(h).max() <= 1
    assert data["saturation"]["right"][2] > 0.05 and data["saturation"]["left"][2] > 0.5  # the latch
    assert sum(data["saturation"]["histogram"]["counts"]) == len(text) * 5
    assert data["saturation"]["spectral_radius"] == pytest.approx(3.0)  # W_hh: 3 on unit 2, else 0


def test_collect_predictions_and_surprise_match_the_model():
    text = PLAY
    vocab = Vocab.from_text(text)
    model = bracket_latch_model(vocab)
    data = collect(model, vocab, text)
    with torch.no_grad():
        logits, _ = model(vocab.encode(text).view(-1, 1))
    p = torch.softmax(logits[:, 0].double(), -1)
    top = decode_top_ids(data["top"])
    assert top.shape[1] == 5 and (top[:, 0] == p.argmax(-1).numpy()).all()
    want = -torch.log(p[:-1].gather(1, vocab.encode(text)[1:, None]))[:, 0].mean().item()
    assert data["mean_surprise_nats"] == pytest.approx(want)


def test_collect_refuses_a_layer_the_model_does_not_have():
    vocab = Vocab.from_text(PLAY)
    with pytest.raises(ValueError, match="layer in 0"):
        collect(bracket_latch_model(vocab), vocab, PLAY, layer=1)


def test_collect_shows_the_chosen_layer_of_a_stacked_model():
    vocab = Vocab.from_text(PLAY)
    torch.manual_seed(1)
    model = CharRNN(len(vocab), embedding_dim=4, hidden_size=6, num_layers=2).eval()
    first, last = collect(model, vocab, PLAY, layer=0), collect(model, vocab, PLAY)
    assert (first["layer"], last["layer"], last["num_layers"]) == (0, 1, 2)
    with torch.no_grad():
        output, _ = model.rnn(model.embed(vocab.encode(PLAY).view(-1, 1)))
    np.testing.assert_allclose(decode_activations(last["activations"]), output[:, 0].numpy(), atol=0.5 / 127)


def layer_by_layer(model: CharRNN, ids: torch.Tensor) -> list[np.ndarray]:
    """Every layer's h_t, (T, H) each, by the recurrence written out step by step in float64:
    h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh), layer k reading layer k − 1's h_t."""
    with torch.no_grad():
        x = model.embed(ids.view(-1, 1))[:, 0].double()  # (T, D)
    layers = []
    for W_ih, W_hh, b_ih, b_hh in model.rnn.all_weights:
        W_ih, W_hh, b_ih, b_hh = (w.detach().double() for w in (W_ih, W_hh, b_ih, b_hh))
        h, out = torch.zeros(W_hh.shape[0], dtype=torch.float64), []
        for x_t in x:
            h = torch.tanh(x_t @ W_ih.T + b_ih + h @ W_hh.T + b_hh)
            out.append(h)
        x = torch.stack(out)  # (T, H): this layer's output, the next one's input
        layers.append(x.numpy())
    return layers


def test_each_layer_of_a_stacked_model_is_the_layer_by_layer_computation():
    vocab = Vocab.from_text(PLAY)
    torch.manual_seed(2)
    model = CharRNN(len(vocab), embedding_dim=4, hidden_size=6, num_layers=3).eval()
    with torch.no_grad():  # weights large enough that the layers differ clearly
        for W in model.rnn.parameters():
            W.mul_(3)
    want = layer_by_layer(model, vocab.encode(PLAY))
    assert min(np.abs(a - b).max() for a in want for b in want if a is not b) > 0.5
    for k in range(3):
        assert layer_states(model, vocab.encode(PLAY), k).shape == (len(PLAY), 6)
        np.testing.assert_allclose(layer_states(model, vocab.encode(PLAY), k), want[k], rtol=0, atol=1e-5)
        data = collect(model, vocab, PLAY, layer=k)
        shown = decode_activations(data["activations"])
        rho = torch.linalg.eigvals(model.rnn.all_weights[k][1].detach().double()).abs().max().item()
        assert data["saturation"]["spectral_radius"] == pytest.approx(rho)  # layer k's W_hh
        np.testing.assert_allclose(shown, want[k], rtol=0, atol=0.5 / 127 + 1e-5)  # int8 on the page
    np.testing.assert_allclose(layer_states(model, vocab.encode(PLAY), -1), want[2], rtol=0, atol=1e-5)


@pytest.mark.parametrize("options", [{"cell": "gru"}, {"layer_norm": True}], ids=["gru", "layer_norm"])
def test_the_page_shows_a_gru_or_layer_norm_models_states_as_the_module_computes_them(options):
    # make run trains a GRU by default; a layer-norm model's states go through γ and β.
    vocab = Vocab.from_text(PLAY)
    torch.manual_seed(3)
    model = CharRNN(len(vocab), embedding_dim=4, hidden_size=6, num_layers=2, **options).eval()
    with torch.no_grad():
        for p in model.rnn.parameters():
            p.add_(0.3 * torch.randn_like(p))  # γ, β away from 1, 0: a missing γ would show
        output, _ = model.rnn(model.embed(vocab.encode(PLAY).view(-1, 1)))
    np.testing.assert_allclose(layer_states(model, vocab.encode(PLAY), -1), output[:, 0].numpy(), atol=1e-6)
    data = collect(model, vocab, PLAY)
    elman = options.get("cell") != "gru"  # the slope and ρ(W_hh) are the Elman cell's BPTT factors
    assert (data["saturation"]["mean_slope"] is not None) == elman
    assert (data["saturation"]["spectral_radius"] is not None) == elman


def test_collect_refuses_a_zoneout_model_in_one_line():
    vocab = Vocab.from_text(PLAY)
    with pytest.raises(ValueError, match="without zoneout"):
        collect(CharRNN(len(vocab), embedding_dim=4, hidden_size=6, zoneout=0.1).eval(), vocab, PLAY)


def test_page_is_one_file_and_no_text_can_close_its_script():
    text = PLAY + "</script><script>alert(1)</script>\n"
    vocab = Vocab.from_text(text)
    page = render(collect(bracket_latch_model(vocab), vocab, text))
    assert page.count("</script>") == 2  # the data's and the code's, no more
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<link" not in page and " src=" not in page


@pytest.fixture(scope="module")
def checkpoint(corpus, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("inspect") / "run"
    argv = ["train", "--data", corpus, "--out", str(out), "--hidden-size", "16", "--embedding-dim", "8",
            "--num-layers", "2", "--batch-size", "4", "--seq-len", "8", "--max-steps", "3",
            "--time-budget", "0", "--eval-interval", "3", "--sample-length", "5", "--no-progress"]
    assert main(argv) == 0
    return str(out / "checkpoint.pt")


def test_cli_writes_the_page_and_the_json(checkpoint, corpus, tmp_path, capsys):
    page, data = tmp_path / "page.html", tmp_path / "page.json"
    argv = ["inspect", "--checkpoint", checkpoint, "--text", corpus, "--chars", "700", "--layer", "0",
            "--out", str(page), "--json", str(data), "--summary", str(tmp_path / "found")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "700 characters, layer 0" in printed and str(page) in printed
    numbers = json.loads(data.read_text())
    assert numbers["activations"]["chars"] == 700 and numbers["layer"] == 0
    inlined = page.read_text().split('<script id="data" type="application/json">')[1].split("</script>")[0]
    assert json.loads(inlined) == numbers  # the page holds the same data
    digest = json.loads((tmp_path / "found" / "results.json").read_text())
    assert digest["found"] == numbers["found"] and digest["units"] == 16
    trained = torch.load(checkpoint, weights_only=False)
    assert digest["model"] == numbers["model"] == {
        "checkpoint": "checkpoint.pt", "hidden_size": 16, "num_layers": 2, "embedding_dim": 8,
        "vocab_size": trained["model_config"]["vocab_size"], "step": 3,
        "elapsed_s": trained["elapsed"], "val_loss": trained["val_loss"]}
    assert digest["page_bytes"] == page.stat().st_size
    assert set(digest["best"]) | set(digest["not_found"]) == {f["feature"] for f in numbers["found"]}
    summary = (tmp_path / "found" / "summary.md").read_text()
    assert summary.startswith("# inspect") and "The model: checkpoint.pt, 3 updates in " in summary
    assert f"validation loss {trained['val_loss']:.4f} nats/char." in summary


def test_cli_refuses_too_few_characters(checkpoint, tmp_path, capsys):
    assert main(["inspect", "--checkpoint", checkpoint, "--chars", "1", "--out", str(tmp_path / "p")]) == 2
    assert "--chars must be at least 2" in capsys.readouterr().err


def test_cli_shows_the_models_own_text_by_default_as_eval_does(corpus, tmp_path, capsys):
    # A model trained with --data is shown its own text (its validation split), not tiny
    # Shakespeare's, and the page lands beside the checkpoint; a missing text is one clear line.
    data = tmp_path / "mine.txt"
    data.write_text(read_text(corpus)[::-1])  # the corpus backwards: not the bundled text
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--hidden-size", "8",
                 "--embedding-dim", "4", "--batch-size", "4", "--seq-len", "8", "--max-steps", "2",
                 "--time-budget", "0", "--eval-interval", "2", "--sample-length", "0", "--no-progress"]) == 0
    checkpoint = str(out / "checkpoint.pt")
    json_out = str(tmp_path / "d.json")
    assert main(["inspect", "--checkpoint", checkpoint, "--chars", "300", "--json", json_out]) == 0
    shown = json.loads((tmp_path / "d.json").read_text())
    assert shown["text"] == split_text(data.read_text())[1][:300]
    assert shown["source"] == f"{data} (val split)"
    assert str(out / "inspect.html") in capsys.readouterr().out and (out / "inspect.html").is_file()
    data.unlink()
    assert main(["inspect", "--checkpoint", checkpoint, "--out", str(tmp_path / "p.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"scratchrnn inspect: error: the model trained on {data}, which is missing: "
                   "pass --text FILE to show another text"]


@pytest.mark.skipif(find_chromium() is None, reason="needs chromium (apt-get install chromium)")
def test_page_in_headless_chromium_has_no_errors_no_requests_and_responds(tmp_path):
    import matplotlib.image

    text = PLAY * 20
    vocab = Vocab.from_text(text)
    page = tmp_path / "page.html"
    write(collect(bracket_latch_model(vocab), vocab, text), page)
    checks = {
        "rendered": "window.inspectRendered",
        "first_unit": "+document.getElementById('unit').value",
        "after_right_arrow": "document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}));"
        " +document.getElementById('unit').value",
        "after_click_on_found": "document.querySelector('#found tr.pick').click();"
        " +document.getElementById('unit').value",
        "tip": "(() => { const s = document.querySelectorAll('#text span')[9];"
        " s.dispatchEvent(new MouseEvent('mousemove', {bubbles: true, clientX: 5, clientY: 5}));"
        " return document.getElementById('tip').textContent; })()",
        "scatter_points": "document.querySelectorAll('#scatter circle').length",
        "after_show_feature": "showFeature('inside parentheses/brackets')",
    }
    report = load(page, checks)
    assert report.errors == []
    assert report.requests == [page.resolve().as_uri()]  # the page itself, nothing else
    values = report.values
    assert values["rendered"]["spans"] == len(text) and values["rendered"]["units"] == 5
    assert values["first_unit"] == 2  # the best found unit is shown first: the bracket latch
    assert values["after_right_arrow"] == 3 and values["after_click_on_found"] == 2
    assert "next character" in values["tip"] and "unit 2" in values["tip"]
    assert values["scatter_points"] == 5 and values["after_show_feature"] == 2
    pixels = matplotlib.image.imread(io.BytesIO(report.screenshot), format="png")
    assert pixels.shape[:2] == (900, 1400) and pixels[..., :3].std() > 0.05  # not blank


@pytest.mark.skipif(find_chromium() is None, reason="needs chromium (apt-get install chromium)")
def test_recorded_load_timings_join_the_summary(tmp_path):
    text = PLAY * 5
    vocab = Vocab.from_text(text)
    page = tmp_path / "page.html"
    write(collect(bracket_latch_model(vocab), vocab, text), page, summary_dir=tmp_path / "found")
    results = tmp_path / "found" / "results.json"
    before = json.loads(results.read_text())
    entry = record(page, results, loads=1)
    after = json.loads(results.read_text())
    assert after == {**before, "browser": entry}  # added, nothing else changed
    assert entry["page_bytes"] == page.stat().st_size == before["page_bytes"]
    assert 0 < entry["script_ms"] <= entry["load_ms"] and entry["loads"] == 1 and entry["switch_ms"] > 0
    assert entry["logical_cpus"] >= 1 and "Chrom" in entry["chromium"]  # Chromium or Chrome
    # The screenshots' scripts pick a unit by feature; a name that is not there is an error.
    assert "no unit scored for the feature" in " ".join(load(page, before="showFeature('rhyme')").errors)


def test_the_page_colours_are_light_tints_that_black_text_reads_on():
    # The page once coloured black text with fully saturated red and blue (contrast 3:1 on red).
    page = (Path(scratchrnn.apps.inspect.__file__).parent / "page.html").read_text(encoding="utf-8")
    tint = float(re.search(r"const TINT = ([0-9.]+)", page)[1])
    for name in ("BLUE", "RED"):
        full = [int(c) for c in re.search(name + r" = \[(\d+), (\d+), (\d+)\]", page).groups()]
        strongest = [255 + (c - 255) * tint for c in full]  # diverging(±1) in the page's script
        linear = [(c / 255 / 12.92) if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4
                  for c in strongest]
        luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
        assert (luminance + 0.05) / 0.05 >= 7, name  # WCAG's AAA contrast with black text
