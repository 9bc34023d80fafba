"""Named features of a text and the search for hidden units that track them.

A feature gives one number per character position t (1/0 for a yes/no property, a count for the
position in the line). The state h_t is the one after reading character t, so a feature at t is
about what the network has read up to and including character t (the speaker-name line is the
exception: whether the current line is ``NAME:`` is known for certain only at its end).

The search (Karpathy, Johnson & Fei-Fei 2015 looked by eye; here it is automatic) scores every
unit j against every feature f two ways:

- the Pearson correlation r(h_j, f) on the first part of the passage (the fit part);
- a one-unit linear probe f ≈ a·h_j + b, fitted by least squares on the fit part and scored on the
  held-out rest as R² = 1 − Σ(f − a·h_j − b)² / Σ(f − mean f)², which is ≤ r² of the held-out
  part and negative when the fitted line is worse than predicting the mean.

A unit *tracks* a feature when its held-out probe R² is at least :data:`FOUND_R2` (|r| ≈ 0.55).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

__all__ = ["FEATURES", "FIT_FRACTION", "FOUND_R2", "feature_matrix", "find_units"]

FIT_FRACTION = 0.5  # the first half fits the probe, the second half scores it
FOUND_R2 = 0.3
TOP_K = 5  # units listed per feature

_SPEAKER = re.compile(r"[A-Z][A-Za-z' ]*:")  # Shakespeare's "MENENIUS:", "First Citizen:"


def _per_char(test: Callable[[str], bool]) -> Callable[[str], np.ndarray]:
    return lambda text: np.fromiter((test(c) for c in text), dtype=np.float64, count=len(text))


def _inside(text: str, opens: str, closes: str) -> np.ndarray:
    """1 from an opening character up to, not including, its closing one (nesting counted)."""
    depth, out = 0, np.zeros(len(text))
    for t, c in enumerate(text):
        if c in closes:
            depth = max(depth - 1, 0)
        out[t] = depth > 0
        if c in opens:
            depth += 1
            out[t] = 1.0
    return out


def inside_quotes(text: str) -> np.ndarray:
    """1 from an opening " up to, not including, the closing " (each " toggles)."""
    inside, out = False, np.zeros(len(text))
    for t, c in enumerate(text):
        if c == '"':
            inside = not inside
        out[t] = inside
    return out


def position_in_line(text: str) -> np.ndarray:
    """0 for the first character of a line (and for its newline), +1 per character after it."""
    out, pos = np.zeros(len(text)), 0
    for t, c in enumerate(text):
        out[t] = pos
        pos = 0 if c == "\n" else pos + 1
    return out


def after_newline(text: str) -> np.ndarray:
    """1 where the character just read is a newline: the next one starts a line."""
    return _per_char(lambda c: c == "\n")(text)


def speaker_line(text: str) -> np.ndarray:
    """1 on every character of a line that is a speaker's name, ``NAME:`` alone on its line."""
    out = np.zeros(len(text))
    start = 0
    for line in text.split("\n"):
        if _SPEAKER.fullmatch(line):
            out[start : start + len(line)] = 1.0
        start += len(line) + 1
    return out


FEATURES: dict[str, Callable[[str], np.ndarray]] = {
    "inside quotes": inside_quotes,
    "inside parentheses/brackets": lambda text: _inside(text, "([{", ")]}"),
    "position in line": position_in_line,
    "just after newline": after_newline,
    "speaker-name line (NAME:)": speaker_line,
    "vowel": _per_char(lambda c: c in "aeiouAEIOU"),
    "upper case": _per_char(str.isupper),
    "whitespace": _per_char(str.isspace),
}


def feature_matrix(text: str) -> tuple[list[str], np.ndarray]:
    """The names of :data:`FEATURES` and their values, (T, F)."""
    return list(FEATURES), np.stack([f(text) for f in FEATURES.values()], axis=1)


def _standardise(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns centred and scaled to unit variance; and which columns vary at all."""
    a = a - a.mean(axis=0)
    std = a.std(axis=0)
    varies = std > 1e-12
    return a / np.where(varies, std, 1.0), varies


def _probe_r2(h_fit, f_fit, h_test, f_test) -> np.ndarray:
    """Held-out R² of f ≈ a·h_j + b fitted per unit j on the fit part: (H, F)."""
    h_mean, f_mean = h_fit.mean(0), f_fit.mean(0)
    hc = h_fit - h_mean
    var_h = np.maximum((hc**2).sum(0), 1e-12)  # (H,)
    a = (hc.T @ (f_fit - f_mean)) / var_h[:, None]  # (H, F) slopes
    b = f_mean[None, :] - a * h_mean[:, None]  # (H, F) intercepts
    # Σ_t (f - a h - b)² expanded so no (T, H, F) array is built.
    f2 = (f_test**2).sum(0)  # (F,)
    fh = h_test.T @ f_test  # (H, F)
    h1, h2, f1 = h_test.sum(0)[:, None], (h_test**2).sum(0)[:, None], f_test.sum(0)[None, :]
    n = len(f_test)
    sse = f2 - 2 * a * fh - 2 * b * f1 + a**2 * h2 + 2 * a * b * h1 + n * b**2
    sst = ((f_test - f_test.mean(0)) ** 2).sum(0)
    return 1 - sse / np.where(sst > 0, sst, np.nan)


def find_units(h: np.ndarray, text: str, fit_fraction: float = FIT_FRACTION) -> list[dict]:
    """Rank the units of ``h`` (T, H), one state per character of ``text``, per named feature.

    Returns one entry per feature: ``feature``, ``found`` (the best unit's held-out R² ≥
    :data:`FOUND_R2`), ``reason`` (why there is no score, else None) and ``units``: the
    :data:`TOP_K` best units by held-out probe R², each with ``unit``, ``r`` (fit-part
    correlation) and ``r2`` (held-out probe R²).
    """
    if len(h) != len(text):
        raise ValueError(f"Expected one state per character, got {len(h)} states for {len(text)} characters")
    names, f = feature_matrix(text)
    split = int(len(text) * fit_fraction)
    h_fit, h_test = h[:split].astype(np.float64), h[split:].astype(np.float64)
    z_h, _ = _standardise(h_fit)
    z_f, f_varies = _standardise(f[:split])
    r = z_h.T @ z_f / max(split, 1)  # (H, F)
    r2 = _probe_r2(h_fit, f[:split], h_test, f[split:])
    test_varies = f[split:].std(0) > 1e-12
    entries = []
    for k, name in enumerate(names):
        if not (f_varies[k] and test_varies[k]):
            entries.append({"feature": name, "found": False, "units": [],
                            "reason": "constant in the fit or the held-out part of the text"})
            continue
        order = np.argsort(-np.nan_to_num(r2[:, k], nan=-np.inf))[:TOP_K]
        units = [{"unit": int(j), "r": float(r[j, k]), "r2": float(r2[j, k])} for j in order]
        entries.append({"feature": name, "found": units[0]["r2"] >= FOUND_R2, "units": units,
                        "reason": None})
    return entries
