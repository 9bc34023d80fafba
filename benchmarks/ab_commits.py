"""A/B: this tree's scratchrnn.RNN against an earlier commit's, side by side in one process.

    python benchmarks/ab_commits.py BASE [--threads 1 2] [--rounds 7] [--out FILE]

The earlier commit's package is taken with ``git archive`` into a temporary folder and renamed
(``scratchrnn`` → ``scratchrnn_base`` in its files, its operators' namespace included), so both
versions are imported at once and every round times both on the same weights and inputs, back to
back, through the bench's own harness (``interleaved_samples``): the machine's drift hits both
alike and the ratio is what the comparison reads. The shapes are ``scratchrnn bench``'s grid;
forward under ``torch.no_grad()`` and forward + backward, as there. The report (markdown) gives
the median ms per call of each and the ratio base / this tree (above 1: this tree is faster), per
shape and as a geometric mean.
"""

from __future__ import annotations

import argparse
import importlib
import io
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from scratchrnn import RNN
from scratchrnn.apps.bench.harness import cpu_name, interleaved_samples, md_table, num_threads
from scratchrnn.apps.bench.rnn import SHAPES

ROOT = Path(__file__).resolve().parents[1]


def import_base(commit: str, into: Path):
    """The ``scratchrnn`` package of ``commit``, imported as ``scratchrnn_base``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src/scratchrnn"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "src" / "scratchrnn"
    for path in package.rglob("*"):
        if path.suffix in (".py", ".c"):
            path.write_text(path.read_text(encoding="utf-8").replace("scratchrnn", "scratchrnn_base"),
                            encoding="utf-8")
    package.rename(package.with_name("scratchrnn_base"))
    sys.path.insert(0, str(into / "src"))
    return importlib.import_module("scratchrnn_base")


def variants(shape, base):
    """Forward and forward + backward of both versions at ``shape``, on the same weights and input."""
    ours = RNN(shape.D, shape.H, shape.layers, bidirectional=shape.bidirectional)
    theirs = base.RNN(shape.D, shape.H, shape.layers, bidirectional=shape.bidirectional)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(shape.T, shape.N, shape.D, requires_grad=True)

    def forward(m):
        def call():
            with torch.no_grad():
                m(x)
        return call

    def train_step(m):
        def call():
            m(x)[0].sum().backward()
        return call

    return ({("fwd", "base"): forward(theirs), ("fwd", "this"): forward(ours)},
            {("fwd+bwd", "base"): train_step(theirs), ("fwd+bwd", "this"): train_step(ours)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the earlier commit (any git revision)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
                            check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base = import_base(commit, Path(tmp))
        rows, ratios = [], {}
        for n_threads in args.threads:
            for shape in SHAPES:
                cells = [{(n_threads, str(shape), *k): fn for k, fn in cell.items()}
                         for cell in variants(shape, base)]
                with num_threads(n_threads):
                    samples = interleaved_samples(cells, args.rounds, min_sample_s=0.05, max_reps=50)
                for mode in ("fwd", "fwd+bwd"):
                    med = {who: sorted(samples[(n_threads, str(shape), mode, who)])[args.rounds // 2]
                           for who in ("base", "this")}
                    ratio = med["base"] / med["this"]
                    ratios.setdefault((n_threads, mode), []).append(ratio)
                    rows.append([n_threads, str(shape), mode, f"{med['base'] * 1e3:.3f}",
                                 f"{med['this'] * 1e3:.3f}", f"{ratio:.3f}"])
    geomeans = [[t, mode, f"{math.exp(sum(map(math.log, r)) / len(r)):.3f}", f"{min(r):.3f}", f"{max(r):.3f}"]
                for (t, mode), r in ratios.items()]
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    report = "\n".join([
        f"# scratchrnn.RNN: this tree against {commit}, side by side", "",
        f"`python benchmarks/ab_commits.py {args.base}`; {cpu_name()}, torch {torch.__version__}, "
        f"{args.rounds} rounds; load average at the end {load}.", "",
        "Ratio = base / this tree (median ms per call): above 1, this tree is faster.", "",
        md_table(["threads", "mode", "geometric mean", "min", "max"], geomeans), "",
        md_table(["threads", "shape (T, N, D, H, L)", "mode", f"{commit} ms", "this ms", "ratio"], rows), "",
    ])
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
