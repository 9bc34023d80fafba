"""The inspect page against hostile input (issue 18): no script of the data ever runs, the policy
stops markup that would get in anyway, characters outside the BMP keep the colours aligned, and the
top-k ids fit any vocabulary. The pages are opened in headless Chromium where it is installed."""

from __future__ import annotations

import pytest
import torch
from chromium import find_chromium, load

from scratchrnn.apps.cli import main
from scratchrnn.apps.inspect import collect, decode_top_ids, write
from scratchrnn.lm.checkpoint import save_checkpoint
from scratchrnn.lm.data import Vocab
from scratchrnn.lm.model import CharRNN

pytestmark = pytest.mark.usefixtures("one_thread")
needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="needs chromium (apt-get install chromium)")

ATTACKS = ['<img src=x onerror="window.pwned=1">', "</script><script>window.pwned=2</script>",
           "<svg onload=window.pwned=3>", "\"'><b onmouseover=window.pwned=4>x</b>", "&lt;&amp;"]
PLAY = "FIRST CITIZEN:\nYou say (he said) \"no\".\n\nMENENIUS:\nI tell you, most 😀 care 🎉.\n"


def model_for(vocab: Vocab, seed: int = 0) -> CharRNN:
    torch.manual_seed(seed)
    return CharRNN(len(vocab), embedding_dim=4, hidden_size=6).eval()


# Every element of the page that reads the data: each hovered, clicked or chosen.
EVERYTHING = """(() => {
  for (const s of document.querySelectorAll('#text span'))
    s.dispatchEvent(new MouseEvent('mousemove', {bubbles: true, clientX: 5, clientY: 5}));
  for (const r of document.querySelectorAll('#found tr.pick')) r.click();
  const rank = document.getElementById('rank');
  for (let k = 0; k < rank.options.length; k++) { rank.value = rank.options[k].value;
    rank.dispatchEvent(new Event('change')); }
  document.getElementById('mode').click();
  return document.getElementById('tip').textContent;
})()"""


@needs_chromium
def test_no_script_of_the_data_runs(tmp_path):
    """Markup in every field the page shows — the text, the vocabulary (a list of whole strings, as
    a crafted checkpoint held before the checkpoint checks), the source, the checkpoint's name, the
    features — is shown as text: nothing of it runs, and nothing even asks to run."""
    text = PLAY * 6 + "".join(ATTACKS) + "\n"
    vocab = Vocab.from_text(text)
    data = collect(model_for(vocab), vocab, text, source=ATTACKS[0])
    data["vocab"] = [ATTACKS[k % len(ATTACKS)] for k in range(len(vocab))]  # what the tooltip lists
    data["model"] = {"checkpoint": ATTACKS[2]}
    data["found"][0]["feature"] = ATTACKS[3]
    data["found"][-1] = {"feature": ATTACKS[0], "units": [], "found": False, "reason": ATTACKS[2]}
    page = tmp_path / "page.html"
    write(data, page)
    report = load(page, {"tip": EVERYTHING, "pwned": "window.pwned === undefined ? null : window.pwned",
                         "shown": "document.body.textContent"})
    assert report.values["pwned"] is None and report.errors == []
    assert ATTACKS[1] in report.values["tip"]  # shown, as text (JSON-escaped)
    assert ATTACKS[3] in report.values["shown"] and ATTACKS[0] in report.values["shown"]
    assert report.requests == [page.resolve().as_uri()]  # the page itself, nothing else


@needs_chromium
def test_a_page_from_a_hostile_checkpoint_and_text_runs_nothing(tmp_path, capsys):
    """End to end: a checkpoint that loads (its vocabulary one string of distinct characters, all
    the markup characters among them) under a file name that is markup, a text of markup under
    another; `scratchrnn inspect` writes the page, and nothing of it runs in Chromium."""
    text = (PLAY + "".join(ATTACKS) + "\n") * 4
    vocab = Vocab.from_text(text)
    model = model_for(vocab)
    ckpt = tmp_path / "<img src=x onerror=window.pwned=5>.pt"
    save_checkpoint(ckpt, {"model_config": model.config.to_dict(), "train_config": {}, "vocab": vocab.chars,
                           "model": model.state_dict(), "step": 1})
    source = tmp_path / "<svg onload=window.pwned=6>.txt"
    source.write_text(text)
    page = tmp_path / "page.html"
    assert main(["inspect", "--checkpoint", str(ckpt), "--text", str(source), "--out", str(page)]) == 0
    report = load(page, {"tip": EVERYTHING, "pwned": "window.pwned === undefined ? null : window.pwned",
                         "title": "document.getElementById('title').textContent"})
    assert report.values["pwned"] is None and report.errors == []
    assert str(source) in report.values["title"]  # shown, as text


@needs_chromium
def test_the_policy_stops_markup_that_gets_in_anyway(tmp_path):
    """A second wall: were some data ever put in as markup, its handlers and scripts would not run
    (the Content-Security-Policy allows the page's own script only, by its hash)."""
    vocab = Vocab.from_text(PLAY)
    page = tmp_path / "page.html"
    write(collect(model_for(vocab), vocab, PLAY * 4), page)
    inject = ("document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.pwned=1\">"
              "<svg onload=\"window.pwned=2\"></svg>');"
              "const s = document.createElement('script'); s.textContent = 'window.pwned = 3';"
              "document.body.appendChild(s);")
    report = load(page, {"images": "document.images.length", "scripts": "document.scripts.length",
                         "pwned": "window.pwned === undefined ? null : window.pwned"}, before=inject)
    assert report.values["images"] == 1 and report.values["scripts"] == 3  # in the page, and inert
    assert report.values["pwned"] is None
    assert report.errors and all("Content Security Policy" in e for e in report.errors), report.errors


@needs_chromium
def test_characters_outside_the_bmp_keep_the_colours_aligned(tmp_path):
    """The page indexed UTF-16 units: after an emoji, every character showed its neighbour's
    activation and tooltip. One span per character (Python's count), each its own character."""
    text = PLAY * 8
    vocab = Vocab.from_text(text)
    page = tmp_path / "page.html"
    write(collect(model_for(vocab), vocab, text), page)
    last = len(text) - 2  # the final "." ("🎉" before it)
    report = load(page, {
        "spans": "document.querySelectorAll('#text span').length",
        "shown": "Array.from(document.querySelectorAll('#text span'), (s) => s.textContent === '↵\\n' ? '\\n'"
                 " : s.textContent)",
        "tip": f"(() => {{ document.querySelectorAll('#text span')[{last}].dispatchEvent(new MouseEvent("
               "'mousemove', {bubbles: true, clientX: 5, clientY: 5}));"
               " return document.getElementById('tip').textContent; })()",
    })
    assert report.errors == []
    assert report.values["spans"] == len(text)
    assert report.values["shown"] == list(text)
    assert report.values["tip"].startswith(f"after . (position {last})")


def test_top_ids_are_wide_enough_for_any_vocabulary():
    """uint8 ids wrapped above 256 characters: the predictions shown were other characters."""
    for size, width in ((200, 1), (300, 2), (70_000, 4)):
        vocab = Vocab("".join(chr(0x4E00 + k) for k in range(size)))
        torch.manual_seed(0)
        model = CharRNN(size, embedding_dim=2, hidden_size=3).eval()
        with torch.no_grad():
            model.head.bias[size - 5:] = 50.0  # the likeliest five: the last ids
        text = vocab.chars[:3] + vocab.chars[-3:]
        data = collect(model, vocab, text)
        top = decode_top_ids(data["top"])
        with torch.no_grad():
            want = model(vocab.encode(text).view(-1, 1))[0][:, 0].topk(5).indices.numpy()
        assert top.shape == (len(text), 5) and (top == want).all() and top.min() >= size - 5
        assert data["top"]["id_bytes"] == width  # no wider than it needs


def test_inspect_refuses_a_checkpoint_whose_vocabulary_holds_markup(tmp_path, capsys):
    model = CharRNN(3, embedding_dim=2, hidden_size=4)
    save_checkpoint(tmp_path / "c.pt", {"model_config": model.config.to_dict(), "train_config": {},
                                        "vocab": [ATTACKS[0], "b", "c"], "model": model.state_dict(),
                                        "step": 1})
    capsys.readouterr()
    assert main(["inspect", "--checkpoint", str(tmp_path / "c.pt"), "--out", str(tmp_path / "p.html")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vocab must be a string of distinct characters, got list" in err
    assert "<img" not in err and not (tmp_path / "p.html").exists()
