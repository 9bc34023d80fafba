"""The ``scratchrnn`` console script: its stop signals handled before the first heavy import.

``import scratchrnn`` imports torch, a second or more; a Ctrl-C meanwhile would be a
KeyboardInterrupt traceback from deep inside torch's import. This package sits outside
``scratchrnn`` (whose ``__init__`` imports torch) and imports only the standard library until its
handlers are in place; :func:`scratchrnn.apps.cli.main` then installs its own for the command.
"""

from __future__ import annotations

import os
import signal

__all__ = ["main"]


def _stopped_early(signum: int, frame) -> None:
    # Nothing has begun (no file is written, nothing to save): one line and out at once. Raising
    # here instead would unwind through a half-finished import of torch.
    os.write(2, f"scratchrnn: stopped by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)


def main() -> int:
    """What ``scratchrnn`` runs: the handlers, then the command line of :mod:`scratchrnn.apps.cli`."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stopped_early)
    from scratchrnn.apps.cli import main as cli_main  # torch, the library: the slow part

    return cli_main()
