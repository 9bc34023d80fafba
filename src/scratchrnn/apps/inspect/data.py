"""What the page shows, measured: every unit's activation per character, the next-character
predictions, the surprise, the saturation and the found units.

Encoding (the page and ``--json`` share it): the activations of a tanh layer lie in [−1, 1] and are
stored as int8 q = round(127·h), unit-major ((H, T) bytes, so one unit's row is contiguous), then
base64. 1/254 is finer than any colour map shows and keeps a 20k-character, 640-unit page at about
17 MB instead of ~100 MB of JSON floats. The top-5 predictions are character ids (little-endian
unsigned integers of ``id_bytes`` bytes: 1, 2 or 4, as wide as the vocabulary needs) and
probabilities quantised to 1/255; the surprise −log p(c_t) is quantised to 1/16 nat (clamped at 15.9).
"""

from __future__ import annotations

import base64

import numpy as np
import torch

from scratchrnn.apps.bench.harness import num_threads
from scratchrnn.apps.inspect.features import find_units
from scratchrnn.apps.lab.gradflow import spectral_radius
from scratchrnn.core.functional import rnn_forward
from scratchrnn.lm.data import Vocab
from scratchrnn.lm.model import CharRNN

__all__ = ["SATURATED", "collect", "decode_activations", "decode_top_ids"]

SATURATED = 0.9  # |h| above this counts as saturated (the paper's threshold)
TOP = 5
SURPRISE_STEP = 1 / 16  # nats per level of the quantised surprise


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def decode_activations(encoded: dict) -> np.ndarray:
    """The (T, H) float32 activations back from the page's / the JSON's ``activations`` entry."""
    q = np.frombuffer(base64.b64decode(encoded["data"]), dtype=np.int8)
    return (q.reshape(encoded["units"], encoded["chars"]).T / encoded["scale"]).astype(np.float32)


def _id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest little-endian unsigned integer that holds ids 0 … vocab_size − 1."""
    for dtype in ("<u1", "<u2", "<u4"):
        if vocab_size - 1 <= np.iinfo(np.dtype(dtype)).max:
            return np.dtype(dtype)
    raise ValueError(f"Expected a vocabulary of at most 2**32 characters, got {vocab_size}")


def decode_top_ids(top: dict) -> np.ndarray:
    """The (T, k) top-k character ids back from the page's / the JSON's ``top`` entry."""
    dtype = np.dtype(f"<u{top.get('id_bytes', 1)}")
    return np.frombuffer(base64.b64decode(top["ids"]), dtype=dtype).reshape(-1, top["k"])


@torch.no_grad()
def layer_states(model: CharRNN, ids: torch.Tensor, layer: int) -> np.ndarray:
    """h_t of RNN layer ``layer`` after each character of ``ids`` (T,), from zero state: (T, H).

    The module returns its last layer's output only; the core's forward returns every layer's
    (``RNNForward.layer_outputs``), so the stack runs once, with the module's own weights.
    """
    rnn = model.rnn
    x = model.embed(ids.view(-1, 1))[:, 0]  # (T, D): one stream, so the rows are the steps
    weights = [w for weights in rnn.all_weights for w in weights]
    weights += [p for name, p in rnn.named_parameters() if name.startswith("ln_")]  # layer norm's γ, β
    result = rnn_forward(
        x, model.init_state(1), weights, [1] * len(ids),
        num_layers=rnn.num_layers, bidirectional=rnn.bidirectional, bias=rnn.bias, cell=rnn.cell_name,
    )
    return result.layer_outputs[layer].numpy()  # (T, H)


@torch.no_grad()
def predictions(model: CharRNN, ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-5 next-character ids and probabilities after each character (T, 5), and the surprise
    −log p(c_t) of each character under the prediction made before it (T,; 0 for the first)."""
    logits, _ = model(ids.view(-1, 1))
    logp = torch.log_softmax(logits[:, 0].double(), dim=-1)  # (T, V)
    top_p, top_id = logp.exp().topk(min(TOP, logp.shape[1]), dim=-1)
    surprise = torch.zeros(len(ids), dtype=torch.float64)
    surprise[1:] = -logp[:-1].gather(1, ids[1:, None])[:, 0]
    return top_id.numpy(), top_p.numpy(), surprise.numpy()


def saturation(h: np.ndarray, W_hh: torch.Tensor | None) -> dict:
    """Per unit, the fraction of steps with h < −0.9 (left) and h > 0.9 (right); for an Elman
    layer (``W_hh`` given) the mean of tanh' = 1 − h² over all units and steps, and ρ(W_hh), the
    two factors BPTT multiplies by at each step back (dh_next = (dh ⊙ (1 − h²)) W_hh) — a GRU's
    step back has no such pair (None, None); and a histogram of all the layer's activations over
    [−1, 1] in 40 bins."""
    counts, edges = np.histogram(np.clip(h, -1, 1), bins=40, range=(-1, 1))
    return {
        "spectral_radius": None if W_hh is None else spectral_radius(W_hh),
        "left": np.round((h < -SATURATED).mean(0), 4).tolist(),
        "right": np.round((h > SATURATED).mean(0), 4).tolist(),
        "threshold": SATURATED,
        "mean_slope": None if W_hh is None else float((1 - h.astype(np.float64) ** 2).mean()),
        "histogram": {"edges": np.round(edges, 3).tolist(), "counts": counts.tolist()},
    }


def collect(model: CharRNN, vocab: Vocab, text: str, layer: int = -1, source: str = "") -> dict:
    """Everything the page shows for ``text`` (only characters ``vocab`` knows), as JSON-able data."""
    # One thread: the text runs as one stream (N = 1), so every step is a matrix-vector product,
    # too small to share, and a second thread only waits (many times slower on a loaded machine).
    with num_threads(1):
        return _collect(model, vocab, text, layer, source)


def _collect(model: CharRNN, vocab: Vocab, text: str, layer: int, source: str) -> dict:
    rnn = model.rnn
    elman = rnn.mode != "GRU"  # a GRU's h_t is a gated mean of tanh values: also in [-1, 1]
    if elman and rnn.nonlinearity != "tanh":
        raise ValueError(f"Expected a tanh RNN or a GRU (activations in [-1, 1]), got {rnn.nonlinearity}")
    if rnn.zoneout:
        raise ValueError(f"Expected a model without zoneout (its states mix in the expectation p), got "
                         f"zoneout={rnn.zoneout}")
    L = model.num_layers
    if not -L <= layer < L:
        raise ValueError(f"Expected a layer in 0 … {L - 1} (or −1 … −{L}), got {layer}")
    layer %= L
    ids = vocab.encode(text)
    if len(ids) < 2:
        raise ValueError(f"Expected a text of at least 2 characters, got {len(ids)}")
    h = layer_states(model, ids, layer)
    top_id, top_p, surprise = predictions(model, ids)
    q = np.clip(np.rint(h * 127), -127, 127).astype(np.int8)
    T, H = h.shape
    return {
        "source": source,
        "text": text,
        "layer": layer,
        "num_layers": L,
        "vocab": vocab.chars,
        "activations": {"chars": T, "units": H, "scale": 127, "data": _b64(q.T)},
        "top": {"k": top_id.shape[1], "id_bytes": _id_dtype(len(vocab)).itemsize,
                "ids": _b64(top_id.astype(_id_dtype(len(vocab)))),
                "probs": _b64(np.rint(top_p * 255).astype(np.uint8))},
        "surprise": {"step": SURPRISE_STEP,
                     "data": _b64(np.clip(np.rint(surprise / SURPRISE_STEP), 0, 255).astype(np.uint8))},
        "mean_surprise_nats": float(surprise[1:].mean()),
        "saturation": saturation(h, rnn.all_weights[layer][1].detach() if elman else None),
        "found": find_units(h, text),
    }
