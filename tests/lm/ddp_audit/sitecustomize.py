"""The "only rank 0 touches files" check of test_distributed.py.

Python imports ``sitecustomize`` at start-up from the first directory on its path that has one;
the test puts this directory on PYTHONPATH of the torchrun it starts. In a worker of rank ≥ 1
(RANK set and not 0), any file event — open, rename, remove, mkdir, mkstemp — on a path under
$SCRATCHRNN_AUDIT_DIR is refused with an error that names it, so the run fails loudly.
"""

import os
import sys

_WATCH = os.environ.get("SCRATCHRNN_AUDIT_DIR")
_RANK = os.environ.get("RANK", "0")
_EVENTS = {"open", "os.rename", "os.remove", "os.mkdir", "os.rmdir", "tempfile.mkstemp", "os.listdir",
           "os.scandir", "os.truncate", "shutil.rmtree"}


def _watched(arg) -> bool:
    if not isinstance(arg, (str, bytes, os.PathLike)):
        return False
    path = os.path.realpath(os.fsdecode(arg))
    return path == _WATCH or path.startswith(_WATCH + os.sep)


def _refuse(event: str, args: tuple) -> None:
    if event in _EVENTS and any(_watched(a) for a in args):
        raise PermissionError(f"rank {_RANK} touched the run's files: {event}{args!r}")


if _WATCH and _RANK != "0":
    _WATCH = os.path.realpath(_WATCH)
    sys.addaudithook(_refuse)
