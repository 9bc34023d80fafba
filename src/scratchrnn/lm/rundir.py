"""The run directory: which directory a run may use, its lock, and the files in it.

A run directory holds::

    config.json      the TrainConfig (paths absolute) and the model's configuration; a resume
                     rewrites it with the settings the run continues with
    log.jsonl        one JSON record per log interval (train loss) and per evaluation (val loss)
    checkpoint.pt    the latest state: enough to resume exactly (see scratchrnn.lm.checkpoint)
    best.pt          the state with the lowest validation loss so far
    loss.png         train and validation loss against steps and against seconds
    samples.txt      a sample of generated text after each evaluation

and, while a run writes it, ``.lock`` (the writer's PID under an advisory ``flock``) and, while
``--force`` replaces an earlier run, ``.replaced/`` (the earlier run's files).

The policy of :meth:`RunDir.open`:

- ``new``: the directory is missing or empty (a missing one is created, with its parents);
  one that holds a run is refused (pass resume or force), and so is one that holds other files.
  The filesystem root and the home directory are refused whatever they hold.
- ``force``: as ``new``, but the files of an earlier run are first moved into ``.replaced/`` —
  not deleted — and only :meth:`RunDir.commit`, called once the new run has written its first
  checkpoint, deletes them. Until then any failure (:meth:`RunDir.abort`), and even a kill
  (the next :meth:`RunDir.open` finds ``.replaced/`` and puts it back), restores the earlier run.
- ``resume``: the directory must hold a checkpoint.pt; nothing in it is removed.

A run that fails before its first checkpoint leaves nothing behind: :meth:`RunDir.abort` removes
the files it wrote and the directories it created. Only one process writes a run directory at a
time: the lock is ``fcntl.flock`` on ``.lock``, which the kernel releases when its holder dies,
so a lock left by a killed process never blocks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

from scratchrnn.lm.checkpoint import check_resumable, load_checkpoint
from scratchrnn.lm.config import LEGACY_DEFAULTS, RESUME_CHANGEABLE, TrainConfig
from scratchrnn.lm.data import DataFile, resolve_data, same_data
from scratchrnn.lm.files import append_text, atomic_write, disk_full_said, file_version, os_error

__all__ = ["LOCK_NAME", "REPLACED", "REPLACING", "RUN_FILES", "RunDir", "RunInUseError", "SavedRun",
           "changes_refused", "read_log", "read_run", "refuse", "resume_config"]

log = logging.getLogger(__name__)

RUN_FILES = ("checkpoint.pt", "config.json", "log.jsonl", "best.pt", "loss.png", "samples.txt")
LOCK_NAME = ".lock"
REPLACED = ".replaced"
REPLACING = ".replaced.tmp"  # the earlier run while it is being moved aside (renamed to REPLACED once whole)
MODES = ("new", "force", "resume")


class RunInUseError(OSError):
    """Another process holds the run directory's lock."""


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``run_dir``/log.jsonl, in order (none if there is no log).

    A partial last line (a write cut short by a kill or a full disk) is skipped with a warning;
    a resume rewrites the log without it. Any other line that is not a JSON record with an integer
    ``step`` (and numbers where the plot reads them) is a ValueError naming the file and the line.
    """
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # also a UnicodeDecodeError
            if number == len(lines):  # no newline after it: the last write was cut short
                log.warning("%s, line %d: skipped a partial last record (%d bytes; a write cut short)",
                            path, number, len(line))
                continue
            raise ValueError(f"{path}, line {number}: not a JSON record") from None
        _check_record(record, path, number)
        records.append(record)
    return records


def _check_record(record, path: Path, number: int) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{path}, line {number}: not a record (a JSON object), got {type(record).__name__}")
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{path}, line {number}: a record without an integer step ≥ 0 ({step!r})")
    for key in ("time", "train_loss", "val_loss", "val_bpc", "lr"):
        value = record.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}, line {number}: {key} must be a number, got {value!r}")
    if ("train_loss" in record or "val_loss" in record) and "time" not in record:
        raise ValueError(f"{path}, line {number}: a loss record without its time")


class _Lock:
    """An exclusive ``flock`` on ``directory/.lock``, which holds the holder's PID."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._file: io.TextIOWrapper | None = None

    def acquire(self) -> None:
        while True:
            f = open(self.path, "a+", encoding="ascii")  # noqa: SIM115 (held open: it is the lock)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                f.close()
                raise os_error(
                    RunInUseError, errno.EBUSY, f"{self.path.parent} is in use by another scratchrnn "
                    f"process (PID {holder}); wait for it to finish, or stop it, or choose another --out"
                ) from None
            # The last holder removes the file as it lets go; if that happened between our open
            # and our flock, we hold a lock on a file nobody else will see: start again.
            try:
                current = os.stat(self.path).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            f.close()
        self._file = f
        try:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}\n")
            f.flush()
        except BaseException:  # e.g. a full disk: no lock, and no lock file left behind
            self.release()
            raise

    def release(self) -> None:
        if self._file is None:
            return
        f, self._file = self._file, None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):  # a failed flush still closes the file
            f.close()  # closing lets go of the flock


class RunDir:
    """The files of one run directory, written by the rank-0 process that holds its lock.

    ``RunDir(path)`` touches nothing; :meth:`open` checks the directory against the policy of the
    module docstring, takes the lock and prepares it; :meth:`close` lets go of the lock.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock = _Lock(self.path)
        self.committed = False  # whether the run's files are its own: set by open("resume"), commit()
        self._opened = False  # the lock is held
        self._owns = False  # a new run's files are ours to remove: set once open() has let it start
        self._aborted = False
        self._created: list[Path] = []  # directories open() made, outermost first

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    # --- the policy ------------------------------------------------------------------------------

    def check_target(self) -> None:
        """Refuse a path that can never be a run directory: a file, the root, the home directory."""
        real = os.path.realpath(self.path)
        if real == os.path.realpath(os.sep):
            raise ValueError(f"--out {self.path} is the filesystem root; give the run a directory of its own")
        if real == os.path.realpath(os.path.expanduser("~")):
            raise ValueError(f"--out {self.path} is the home directory; give the run a directory of its own")
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path} exists and is not a directory")

    def open(self, mode: str) -> None:
        """Check the directory for ``mode`` ("new", "force" or "resume"), lock it and prepare it.

        Raises:
            FileExistsError: ``new`` on a directory that holds a run.
            FileNotFoundError: ``resume`` without a checkpoint.pt.
            RunInUseError: another process holds the lock.
            ValueError, OSError: a directory that cannot be a run directory (see check_target), or
                that holds files of something else.
        """
        assert mode in MODES and not self._opened, mode
        self.check_target()
        if mode == "resume":
            if not any(p.exists() for p in (self.checkpoint, self.path / REPLACED, self.path / REPLACING)):
                raise FileNotFoundError(f"no run to resume in {self.path} (no checkpoint.pt)")
        else:
            with disk_full_said(self.path):
                self._make_directory()
        try:
            with disk_full_said(self.lock.path):
                self.lock.acquire()
        except RunInUseError:
            raise  # the directory is its holder's: nothing here is ours to remove
        except BaseException:
            self._remove_created()
            raise
        self._opened = True
        try:
            self._prepare(mode)
        except BaseException:
            self.close()
            raise

    def _prepare(self, mode: str) -> None:
        self._recover()
        if mode == "resume":
            if not self.checkpoint.is_file():
                raise FileNotFoundError(f"no run to resume in {self.path} (no checkpoint.pt)")
            self.committed = True
            return
        if mode == "new" and self.holds_run():
            raise FileExistsError(
                f"{self.path} holds another run; pass --resume to continue it or --force to replace it"
            )
        foreign = self._foreign()
        if foreign and not self.holds_run():
            shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
            raise FileExistsError(f"{self.path} is not empty and holds no scratchrnn run ({shown}); "
                                  "give a new or empty directory")
        self._put_aside()
        self._owns = True

    def commit(self) -> None:
        """The new run has written its first checkpoint: the earlier run it replaces goes now."""
        if not self.committed:
            shutil.rmtree(self.path / REPLACED, ignore_errors=True)
            self.committed = True

    def abort(self) -> None:
        """The run failed before its first checkpoint: remove what it wrote, restore what it replaced
        (the directories it created go when the lock is let go). Nothing happens after commit()."""
        if self._owns and not self.committed:
            self._restore()
            self._aborted = True

    def close(self) -> None:
        """Let go of the lock (and, after abort(), remove the directories that open() created)."""
        if not self._opened:
            return
        self.lock.release()
        self._opened = False
        if self._aborted:
            self._remove_created()

    def _remove_created(self) -> None:
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):  # not empty: something else is in it now
                directory.rmdir()

    def _make_directory(self) -> None:
        missing = []
        p = self.path.absolute()
        while not p.exists():
            missing.append(p)
            p = p.parent
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:  # made meanwhile by someone else: not ours to remove
                continue
            self._created.append(directory)

    def _foreign(self) -> list[str]:
        """The entries that are neither run files, nor the lock, nor the replaced run."""
        own = {*RUN_FILES, LOCK_NAME, REPLACED, REPLACING}
        return sorted(name for name in os.listdir(self.path) if name not in own)

    def _put_aside(self) -> None:
        present = [name for name in RUN_FILES if (self.path / name).exists()]
        if not present:
            return
        # Into REPLACING one file at a time, then renamed to REPLACED at once: a kill in between
        # leaves REPLACING, whose files _recover moves back beside the ones not moved yet.
        moving = self.path / REPLACING
        moving.mkdir()
        for name in present:
            os.replace(self.path / name, moving / name)
        os.replace(moving, self.path / REPLACED)

    def _restore(self) -> None:
        for name in RUN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()
        aside = self.path / REPLACED
        if aside.is_dir():
            for name in os.listdir(aside):
                os.replace(aside / name, self.path / name)
            aside.rmdir()

    def _recover(self) -> None:
        """Tidy what a killed writer left: temp files, and a .replaced/ run (back if the new run
        never wrote a checkpoint, else gone)."""
        for name in os.listdir(self.path):
            if name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in RUN_FILES):
                (self.path / name).unlink()
        moving = self.path / REPLACING
        if moving.is_dir():  # killed while moving the earlier run aside: all of it is the earlier run
            for name in os.listdir(moving):
                os.replace(moving / name, self.path / name)
            moving.rmdir()
            log.warning("%s: put back the earlier run that an interrupted --force was moving aside",
                        self.path)
        if not (self.path / REPLACED).is_dir():
            return
        if self.checkpoint.exists():
            shutil.rmtree(self.path / REPLACED)
        else:
            self._restore()
            log.warning("%s: put back the earlier run that an interrupted --force had moved aside", self.path)

    # --- the files -------------------------------------------------------------------------------

    def write_config(self, config: dict) -> None:
        atomic_write(self.path / "config.json", (json.dumps(config, indent=2) + "\n").encode())

    def log(self, record: dict) -> None:
        append_text(self.path / "log.jsonl", json.dumps(record) + "\n")

    def read_log(self) -> list[dict]:
        return read_log(self.path)

    def truncate_log(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint by a run that then stopped)."""
        kept = [r for r in self.read_log() if r["step"] <= step]
        atomic_write(self.path / "log.jsonl", "".join(json.dumps(r) + "\n" for r in kept).encode())

    def check_data_file(self, ckpt: dict, data_file: DataFile | None, allow: bool) -> None:
        """Refuse to resume the run of ``ckpt`` over a data file that is not the one it saved (its size
        or hash differ), unless ``allow``: then the change is logged and recorded in log.jsonl.
        A checkpoint that recorded no data file (older versions) is not checked."""
        saved = ckpt.get("data_file")
        if saved is None or data_file is None or saved == data_file.to_dict():
            return
        name = ckpt["train_config"].get("data") or "the bundled corpus"
        what = (f"the data file {name} changed since the checkpoint of step {ckpt['step']} "
                f"({saved['bytes']:,} bytes, hash {saved['sha256'][:12]}; now {data_file.bytes:,} bytes, "
                f"hash {data_file.sha256[:12]})")
        if not allow:
            raise ValueError(f"{what}: resuming would train on other text; restore the file, or pass "
                             "--allow-data-change to go on over the new one")
        log.warning("%s: going on over the new text (--allow-data-change)", what)
        self.log({"step": ckpt["step"], "data_changed": {"was": saved, "now": data_file.to_dict()}})

    def add_sample(self, header: str, text: str) -> None:
        append_text(self.path / "samples.txt", f"--- {header} ---\n{text}\n\n")


# --------------------------------------------------------------------------------------------
# Resuming: the saved settings, and what may change.
# --------------------------------------------------------------------------------------------


def changes_refused(saved: dict, given: dict) -> list[tuple[str, object, object]]:
    """(name, saved value, given value) for each given setting that differs from the saved one
    and may not change on resume; the same file named differently is the same ``data``."""
    refused = []
    saved = LEGACY_DEFAULTS | saved  # a run saved before a setting's default changed had the old one
    for name, value in given.items():
        if name in RESUME_CHANGEABLE or name not in saved:
            continue
        old = saved[name]
        same = same_data(old, value) if name == "data" else old == value
        if not same:
            refused.append((name, old, value))
    return sorted(refused, key=lambda r: r[0])


def refuse(refused: list[tuple[str, object, object]], run_dir: str | os.PathLike) -> None:
    """Raise the one ValueError that names every setting of ``refused`` with both its values."""
    if refused:
        names = ", ".join(name for name, _, _ in refused)
        detail = "; ".join(f"{name}: the run has {old!r}, got {new!r}" for name, old, new in refused)
        raise ValueError(f"{names} cannot change when resuming the run in {os.fspath(run_dir)} ({detail}); "
                         f"only {', '.join(RESUME_CHANGEABLE)} can")


@dataclass(frozen=True)
class SavedRun:
    """What :func:`read_run` read: the settings to resume with, the checkpoint, and which
    version of the file it was (see :func:`scratchrnn.lm.files.file_version`)."""

    config: TrainConfig
    checkpoint: dict
    version: tuple[int, int, int, int] | None


def resume_config(out: str | os.PathLike, **given) -> TrainConfig:
    """The settings of the run saved in ``out``, with ``given`` applied; pass it to
    ``train(..., resume=True)``.

    A given setting that equals the saved one is accepted (the same file named differently is the
    same ``data``); one of :data:`RESUME_CHANGEABLE` (the stopping rule, the output's cadence)
    replaces the saved one; any other real change is refused with a ValueError naming it.
    """
    return read_run(out, **given).config


def read_run(out: str | os.PathLike, **given) -> SavedRun:
    """As :func:`resume_config`, but keeping the checkpoint it read: pass the result to
    ``Trainer(saved.config, resume=True, saved=saved)``, which then does not read it again."""
    run = RunDir(out)
    run.check_target()
    # After a --force killed before its first checkpoint, the run to resume is the one moved
    # aside (RunDir.open("resume") puts it back).
    checkpoint = run.checkpoint if run.checkpoint.is_file() else run.path / REPLACED / run.checkpoint.name
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no run to resume in {run.path} (no checkpoint.pt)")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; "
                         f"TrainConfig has {', '.join(sorted(known))}")
    version = file_version(checkpoint)  # before the read: a rewrite during it shows as a change
    ckpt = load_checkpoint(checkpoint)
    check_resumable(ckpt, checkpoint)
    saved = LEGACY_DEFAULTS | {k: v for k, v in ckpt["train_config"].items() if k in known}
    refuse(changes_refused(saved, given), run.path)
    changes = {k: v for k, v in given.items() if k in RESUME_CHANGEABLE and k != "out"}
    # allow_data_change holds for this command only, never for the resumes after it
    changes.setdefault("allow_data_change", False)
    config = dataclasses.replace(TrainConfig(**saved), **changes, out=os.path.abspath(out),
                                 data=resolve_data(saved.get("data")))
    return SavedRun(config, ckpt, version)

