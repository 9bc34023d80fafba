"""A user's clone is a folder named ``scratchrnn`` (``git clone .../scratchrnn``), so every path
under it — the sources, the tests, the ``.venv`` that ``make`` creates there, torch's own files in
it — contains the word "scratchrnn". A check that looks for that word in text carrying file paths
(a TorchScript graph records the source file of every node) passes elsewhere and fails there.

This test runs such checks from a folder of that name: the layout of a clone, made of symbolic
links to this checkout's sources, tests and installed packages, imported through the links. Add a
test file to PATH_SENSITIVE when it looks for "scratchrnn" in paths, graphs, tracebacks or messages.
(.ci/run also runs the whole suite from a clone in a folder named scratchrnn.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH_SENSITIVE = ["tests/core/test_convert.py"]


def test_the_path_sensitive_checks_pass_in_a_clone_named_scratchrnn(tmp_path):
    clone = tmp_path / "scratchrnn"
    clone.mkdir()
    for name in ("src", "tests", "pyproject.toml"):
        (clone / name).symlink_to(ROOT / name)
    site = clone / ".venv" / "site-packages"  # torch and the rest, as a clone's .venv holds them
    site.parent.mkdir()
    site.symlink_to(sysconfig.get_paths()["purelib"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(clone / "src"), str(site)])}
    where = subprocess.run(
        [sys.executable, "-c", "import scratchrnn, torch; print(scratchrnn.__file__); print(torch.__file__)"],
        cwd=clone, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert all(path.startswith(str(clone)) for path in where), where  # imported from the "clone"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PATH_SENSITIVE],
        cwd=clone, env=env, capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
