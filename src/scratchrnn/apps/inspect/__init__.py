"""scratchrnn inspect: a page of a trained CharRNN's hidden units over a passage of text.

One self-contained HTML file (its script, style and data inline; no network, no server), in the
spirit of Karpathy, Johnson & Fei-Fei (2015), "Visualizing and Understanding Recurrent Networks":
each character coloured by the selected unit's activation, the model's top-5 next characters on
hover, a surprise (−log p) mode, the units that track named features of the text (found by
:mod:`scratchrnn.apps.inspect.features`) and each unit's saturation. ``--json`` writes the same
data for notebooks (decode the activations with :func:`decode_activations`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

from scratchrnn.apps.helpformat import DefaultsHelpFormatter
from scratchrnn.apps.inspect.data import collect, decode_activations, decode_top_ids
from scratchrnn.lm.checkpoint import load_model
from scratchrnn.lm.data import read_text, split_text

__all__ = ["add_parser", "collect", "content_security_policy", "decode_activations", "decode_top_ids",
           "describe", "digest", "main", "render", "write"]

DEFAULT_CHARS = 5000


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(template: str) -> str:
    """The page's policy: its own inline script and style (by their hashes) and nothing else — no
    other script, no inline event handler, no request of any kind."""
    script = re.search(r"<script>(.*?)</script>", template, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", template, re.S).group(1)
    return (f"default-src 'none'; script-src {_sha256(script)}; style-src {_sha256(style)}; "
            "base-uri 'none'; form-action 'none'")


def render(data: dict) -> str:
    """The page: the template with ``data`` inlined as JSON (every ``<`` escaped, so no text can
    close the script element) and its Content-Security-Policy."""
    template = (resources.files(__package__) / "page.html").read_text(encoding="utf-8")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    page = template.replace("/*CSP*/", content_security_policy(template), 1)
    return page.replace("/*DATA*/", payload, 1)


def digest(data: dict, page_bytes: int | None = None) -> dict:
    """The page's findings without the per-character data: the model (when the data names its
    checkpoint), found units, saturation, surprise; and the page's size, if given."""
    left, right = data["saturation"]["left"], data["saturation"]["right"]
    threshold = data["saturation"]["threshold"]
    return {
        "source": data["source"],
        "model": data.get("model"),
        "page_bytes": page_bytes,
        "page_mb": None if page_bytes is None else page_bytes / 1e6,
        "chars": data["activations"]["chars"],
        "units": data["activations"]["units"],
        "layer": data["layer"],
        "mean_surprise_nats": data["mean_surprise_nats"],
        "found": data["found"],
        "best": {f["feature"]: f["units"][0] for f in data["found"] if f["found"]},
        "not_found": [f["feature"] for f in data["found"] if not f["found"]],
        "saturation": {
            "threshold": threshold,
            "mean_slope": data["saturation"]["mean_slope"],
            "spectral_radius": data["saturation"]["spectral_radius"],
            "mean_left": sum(left) / len(left),
            "mean_right": sum(right) / len(right),
            "units_saturated_half_the_time": sum(a + b > 0.5 for a, b in zip(left, right, strict=True)),
            "units_never_saturated": sum(a + b == 0 for a, b in zip(left, right, strict=True)),
        },
    }


def summary_markdown(digest: dict) -> str:
    """The found units as a markdown table, the features that found none, the saturation."""
    rows = [
        f"| {f['feature']} | {u['unit']} | {u['r2']:.2f} | {u['r']:.2f} | {'yes' if f['found'] else 'no'} |"
        for f in digest["found"]
        for u in f["units"][:1]
    ]
    sat, model = digest["saturation"], digest.get("model")
    trained = ""
    if model:
        trained = f" The model: {model['checkpoint']}, {model['step']:,} updates"
        trained += "" if model["elapsed_s"] is None else f" in {model['elapsed_s']:.0f} s"
        trained += "" if model["val_loss"] is None else f", validation loss {model['val_loss']:.4f} nats/char"
        trained += "."
    return "\n".join([
        "# inspect: the units that track named features",
        "",
        f"{digest['chars']:,} characters of {digest['source']}, layer {digest['layer']}, "
        f"{digest['units']} units." + trained,
        "",
        "| feature | best unit | held-out R² | r | found |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "No score (the feature is constant in the fit half or the held-out half of the text): " + (", ".join(
            f["feature"] for f in digest["found"] if not f["units"]) or "none") + ".",
        "",
        f"Saturation (|h| > {sat['threshold']}): on average a unit is left-saturated "
        f"{sat['mean_left']:.3f} and right-saturated {sat['mean_right']:.3f} of the time; "
        f"{sat['units_saturated_half_the_time']} units are saturated more than half the time, "
        f"{sat['units_never_saturated']} never."
        + ("" if sat["mean_slope"] is None else
           f" The mean of 1 − h² is {sat['mean_slope']:.3f}, ρ(W_hh) {sat['spectral_radius']:.3g}."),
    ]) + "\n"


def write(data: dict, out: str | Path, json_out: str | Path | None = None,
          summary_dir: str | Path | None = None) -> list[Path]:
    """Write the page; the JSON, if ``json_out``; ``results.json`` (:func:`digest`) and
    ``summary.md`` into ``summary_dir``, if given. Returns the paths written."""
    paths = [Path(out)]
    paths[0].write_text(render(data), encoding="utf-8")
    if json_out is not None:
        paths.append(Path(json_out))
        paths[-1].write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    if summary_dir is not None:
        folder = Path(summary_dir)
        folder.mkdir(parents=True, exist_ok=True)
        found = digest(data, page_bytes=paths[0].stat().st_size)
        paths.append(folder / "results.json")
        paths[-1].write_text(json.dumps(found, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        paths.append(folder / "summary.md")
        paths[-1].write_text(summary_markdown(found), encoding="utf-8")
    return paths


def passage(text_file: str | None, split: str, chars: int, known: set[str],
            trained_on: str | None = None) -> tuple[str, str]:
    """The first ``chars`` characters the model knows of the text to show, and where it came from:
    ``text_file``, else the ``split`` of the text the model trained on (``trained_on``, as its
    checkpoint names it; None: the bundled tiny Shakespeare), as ``scratchrnn eval`` reads it."""
    if text_file is not None:
        text, source = read_text(text_file), text_file
    else:
        if trained_on is not None and not Path(trained_on).exists():
            raise FileNotFoundError(f"the model trained on {trained_on}, which is missing: pass --text FILE "
                                    "to show another text")
        train, val = split_text(read_text(trained_on))
        name = "tiny Shakespeare" if trained_on is None else trained_on
        text, source = (val if split == "val" else train), f"{name} ({split} split)"
    return "".join(c for c in text if c in known)[:chars], source


def describe(checkpoint: dict, path: str | Path) -> dict:
    """What the page says of the model: its checkpoint's name (not its absolute path), size, and
    how far it trained (updates, seconds, validation loss; None where the checkpoint has none)."""
    config = checkpoint["model_config"]
    return {
        "checkpoint": Path(path).name,
        **{k: config[k] for k in ("hidden_size", "num_layers", "embedding_dim", "vocab_size")},
        "step": checkpoint.get("step"),
        "elapsed_s": checkpoint.get("elapsed"),
        "val_loss": checkpoint.get("val_loss"),
    }


def add_parser(sub) -> None:
    """Register ``scratchrnn inspect`` on the CLI's subparsers."""
    p = sub.add_parser(
        "inspect",
        help="write an HTML page of a model's hidden units over a text (found units, saturation)",
        description="One self-contained HTML page (opens from disk, no network): each character "
        "coloured by a hidden unit's activation, top-5 predictions on hover, a surprise mode, the "
        "units that track named features of the text, and saturation.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.set_defaults(run=main)
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by scratchrnn train")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--text", default=None,
                        help="UTF-8 text file to show (default: the --split of the model's training text)")
    source.add_argument("--split", default="val", choices=("train", "val"),
                        help="which part of the model's training text to show")
    p.add_argument("--chars", type=int, default=DEFAULT_CHARS, help="characters to show")
    p.add_argument("--layer", type=int, default=-1, help="RNN layer to show (−1: the last)")
    p.add_argument("--out", default=None, help="the HTML page to write (default: inspect.html beside the "
                   "checkpoint)")
    p.add_argument("--json", default=None, help="also write the page's data as JSON here")
    p.add_argument("--summary", default=None,
                   help="also write the found units and saturation (results.json, summary.md) here")


def main(args) -> None:
    """``scratchrnn inspect``: build the page and print where it is."""
    if args.chars < 2:
        raise ValueError(f"--chars must be at least 2, got {args.chars}")
    model, vocab, checkpoint = load_model(args.checkpoint)
    text, source = passage(args.text, args.split, args.chars, set(vocab.chars),
                           trained_on=checkpoint["train_config"].get("data"))
    data = {**collect(model, vocab, text, layer=args.layer, source=source),
            "model": describe(checkpoint, args.checkpoint)}
    out = args.out if args.out is not None else Path(args.checkpoint).parent / "inspect.html"
    paths = write(data, out, args.json, args.summary)
    found = [f"{f['feature']}: unit {f['units'][0]['unit']} (R² {f['units'][0]['r2']:.2f})"
             for f in data["found"] if f["found"]]
    print(f"{len(text):,} characters, layer {data['layer']}: found " + ("; ".join(found) or "no unit"))
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
