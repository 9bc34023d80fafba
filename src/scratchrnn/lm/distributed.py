"""Data-parallel training on torch.distributed: one model, W processes, each on its own streams.

``torchrun`` starts W copies of the program and tells each one who it is through environment
variables: ``RANK`` (0 … W − 1 over all machines), ``WORLD_SIZE`` (W), ``LOCAL_RANK`` (the index
on this machine, which picks the GPU), ``LOCAL_WORLD_SIZE`` (processes on this machine), and
``MASTER_ADDR`` / ``MASTER_PORT`` (where rank 0 waits for the others). :func:`init` reads them,
joins the process group — gloo on CPUs, NCCL on GPUs — and returns a :class:`World`, which the
trainer asks for everything the ranks must agree on. Without torchrun it returns the one-process
world, whose collectives do nothing, so the same training code runs either way.

How the work is split (W processes, a global batch of N streams, N divisible by W):

    training     rank r reads streams r·N/W … (r + 1)·N/W − 1 of the same N-stream layout that one
                 process reads, so the W ranks together see exactly the one-process batch. Each
                 computes the mean loss over its T·N/W characters and its gradient with our
                 hand-written backward; DistributedDataParallel averages the gradients across the
                 ranks during that backward (the mean of W equal-sized means is the mean over all
                 T·N characters), so every rank holds the one-process gradient, clips it the same
                 way and takes the same optimizer step: the parameters stay identical without
                 ever being sent again.
    validation   the validation streams are split the same way (unevenly if need be); each rank
                 sums the cross-entropy over its characters and one all-reduce of (sum, count)
                 gives the mean over the whole validation split: the number one process computes,
                 up to the order of the additions.
    agreement    once per step one all-reduce carries the loss (the mean over the ranks, for the
                 log and the NaN check), whether any rank was sent SIGINT or SIGTERM, and rank 0's
                 clock, so every rank takes the same decisions: the learning rate of a time-budgeted
                 schedule, when to stop, that the loss diverged.
    files        only rank 0 reads and writes files: it reads the text and the checkpoint and sends
                 them to the others (machines need not share a filesystem), and it writes the run
                 directory. The hidden state of all N streams is gathered into each checkpoint, so
                 a run resumes on any number of processes.
    faults       every collective waits at most ``timeout`` seconds (``--dist-timeout``): a peer that
                 hangs or vanishes becomes one :class:`PeerLost` error naming this rank and the
                 operation, and the process exits, so that torchrun's restart takes over. A stop
                 signal that arrives while the main thread waits inside a C call (joining the group,
                 a collective) ends the process within seconds: see :func:`watch_stop_signals`.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import Tensor, nn

__all__ = ["DEFAULT_TIMEOUT", "STOP_SIGNALS", "PeerLost", "World", "current", "init", "launched",
           "raised_on_every_rank", "shutdown", "stop_grace", "watch_stop_signals"]

log = logging.getLogger(__name__)

R = TypeVar("R")
E = TypeVar("E", bound=BaseException)

# The signals that stop training cleanly (a checkpoint, then exit); any rank's counts for all.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEVICES = ("cpu", "cuda")
# Seconds a collective may wait for its peers (gloo's own default is 30 minutes): a CPU step of
# the default model takes well under a second, a checkpoint of it a fraction of one.
DEFAULT_TIMEOUT = 120.0


class PeerLost(RuntimeError):
    """A collective failed: a peer did not answer within the timeout, or left the job."""


def _collective_failed(err: BaseException) -> bool:
    """Whether ``err`` is a communication failure (gloo, NCCL, the store), not a bug of ours."""
    if isinstance(err, PeerLost):
        return False
    if isinstance(err, (TimeoutError, getattr(tdist, "DistError", ()))):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        word in text for word in ("gloo", "Gloo", "NCCL", "c10d", "Connection", "connection", "Timed out",
                                  "timed out", "Socket", "socket", "closed"))


@dataclass(frozen=True)
class World:
    """This process's place among the W processes of a data-parallel run.

    ``World()`` is the one-process world: every collective below returns its input unchanged.

    Attributes:
        rank: 0 … size − 1, this process's index over all machines; rank 0 writes the files.
        size: W, the number of processes.
        local_rank, local_size: the index and the number of processes on this machine.
        device: where this process keeps the model (``cuda:<local_rank>`` for NCCL).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    timeout: float = DEFAULT_TIMEOUT

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reads and writes files and reports."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's share of n items (streams): r·n // W … (r + 1)·n // W − 1. The W shards
        partition range(n); they have equal sizes when W divides n, and some are empty if n < W."""
        return slice(self.rank * n // self.size, (self.rank + 1) * n // self.size)

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ValueError unless the global batch (N streams) splits evenly over the W ranks."""
        if batch_size % self.size:
            raise ValueError(
                f"batch_size is the global number of streams and must be divisible by the number "
                f"of processes: {batch_size} streams do not split over {self.size} processes"
            )

    # --- collectives: every rank must call them, in the same order -----------------------------

    @contextlib.contextmanager
    def collective(self, operation: str) -> Iterator[None]:
        """Inside, a failed collective (a peer that hung past the timeout, or left) is raised as
        one :class:`PeerLost` naming this rank and ``operation``."""
        try:
            yield
        except Exception as err:
            if self.size == 1 or not _collective_failed(err):
                raise
            raise PeerLost(_lost(self.rank, self.size, operation, self.timeout, err)) from None

    def sum(self, values: Sequence[float]) -> list[float]:
        """The elementwise sum of ``values`` over the ranks (float64), the same on every rank."""
        if self.size == 1:
            return [float(v) for v in values]
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        with self.collective("all_reduce"):
            tdist.all_reduce(t)
        return t.tolist()

    def main_value(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (for clocks: each rank's own reading differs)."""
        if self.size == 1:
            return float(value)
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        with self.collective("broadcast"):
            tdist.broadcast(t, src=0)
        return t.item()

    def agree(self, loss: float, seconds: float, signals: Sequence[int]) -> tuple[float, float, int | None]:
        """One all-reduce per training step, so that every rank takes the same decisions.

        Args:
            loss: this rank's loss on its shard of the batch.
            seconds: this rank's duration of the step (only rank 0's is used).
            signals: the :data:`STOP_SIGNALS` this rank has received.

        Returns:
            the mean loss over the ranks (NaN if any rank's is), rank 0's seconds, and a signal
            that some rank received (SIGINT before SIGTERM), or None.
        """
        flags = [float(s in signals) for s in STOP_SIGNALS]
        loss_sum, seconds, *counts = self.sum([loss, seconds if self.is_main else 0.0, *flags])
        received = [s for s, count in zip(STOP_SIGNALS, counts, strict=True) if count > 0]
        return loss_sum / self.size, seconds, received[0] if received else None

    def broadcast(self, obj: R) -> R:
        """Rank 0's ``obj`` (anything picklable) on every rank; the others' ``obj`` is ignored."""
        if self.size == 1:
            return obj
        box = [obj]
        with self.collective("broadcast_object_list"):
            tdist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def gather(self, obj: R) -> list[R]:
        """Every rank's ``obj``, in rank order, on every rank (tensors: move them to the CPU first)."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        with self.collective("all_gather_object"):
            tdist.all_gather_object(out, obj)
        return out

    def on_main(self, fn: Callable[..., R], *args, **kwargs) -> R:
        """``fn(*args, **kwargs)`` run by rank 0 alone; its result on every rank.

        A ValueError or OSError it raises is raised on every rank (marked so that only rank 0
        reports it: see :func:`raised_on_every_rank`).
        """
        result, error = None, None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
            except (ValueError, OSError) as err:
                error = err
        if self.size > 1:
            result, error = self.broadcast((result, error))
        if error is not None:
            error.on_every_rank = True  # type: ignore[attr-defined]
            raise error
        return result  # type: ignore[return-value]

    def main_error(self, make: Callable[..., E], *args) -> E:
        """The exception ``make(*args)`` builds on rank 0 (it may read files there), on every
        rank, marked so that only rank 0 reports it: ``raise world.main_error(...)``."""
        error = make(*args) if self.is_main else None
        error = self.broadcast(error)
        error.on_every_rank = True  # type: ignore[union-attr]
        return error  # type: ignore[return-value]

    # --- the model -----------------------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train with: ``model`` itself in one process, else ``model`` inside
        DistributedDataParallel, which averages the gradients over the ranks during backward.

        DDP hooks each parameter's gradient accumulation, so it needs no help from the autograd
        graph: our hand-written backward (one autograd node for the whole RNN) deposits the
        gradients and DDP all-reduces them in buckets as they arrive. Every parameter gets a
        gradient on every step, so ``find_unused_parameters`` stays off (it would cost a graph
        traversal per step). The models have no buffers, so DDP's buffer options do nothing here
        (and ``broadcast_buffers`` is deprecated: passing it warns).
        """
        if self.size == 1:
            return model
        ids = [self.device] if self.device.type == "cuda" else None
        with self.collective("DDP's broadcast of the parameters"):
            return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def rng_state(self) -> Tensor:
        """The state of the generator that dropout on this rank's device draws from (on the CPU)."""
        if self.device.type == "cuda":
            return torch.cuda.get_rng_state(self.device)
        return torch.get_rng_state()

    def set_rng_state(self, state: Tensor) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)

    def restore_rng(self, states: Sequence[Tensor] | None, device_type: str | None, cpu_state: Tensor,
                    seed: int) -> None:
        """Continue each rank's own dropout stream (``states``, one per rank) when they come from as
        many processes on the same kind of device; otherwise rank 0 takes the saved CPU generator
        and the others start fresh streams from ``seed`` (dropout masks then differ from an
        uninterrupted run)."""
        if states is not None and len(states) == self.size and device_type == self.device.type:
            self.set_rng_state(states[self.rank])
        else:
            torch.set_rng_state(cpu_state)
            self.seed_rank(seed)

    def seed_rank(self, seed: int) -> None:
        """Give ranks 1 … W − 1 their own dropout streams (rank 0 keeps the one-process stream),
        so that the shards of a batch do not share dropout masks."""
        if self.rank:  # modulo 2⁶⁴: torch takes a 64-bit seed, and any seed of TrainConfig is valid
            torch.manual_seed((seed * 1_000_003 + self.rank) % 2**64)

    def _object_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None


def _lost(rank: int, size: int, operation: str, timeout: float, err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    reason = lines[0] if lines else type(err).__name__
    if reason.startswith("[") and "] " in reason:  # gloo's "[path/to/file.cc:78] " prefix
        reason = reason.split("] ", 1)[1]
    return (f"rank {rank} of {size}: {operation} failed: a peer did not answer within the "
            f"--dist-timeout of {timeout:g} s, or left the job ({reason})")


def raised_on_every_rank(err: BaseException) -> bool:
    """Whether ``err`` came from :meth:`World.on_main`: rank 0 reports it, the others need not."""
    return bool(getattr(err, "on_every_rank", False))


_current: World | None = None


def current() -> World:
    """The world :func:`init` joined; else the default process group, if the caller set one up
    (NCCL: on the current CUDA device); else the one-process world."""
    if _current is not None:
        return _current
    if tdist.is_available() and tdist.is_initialized():
        nccl = tdist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        size = tdist.get_world_size()
        return World(tdist.get_rank(), size, _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", size),
                     device)  # the timeout is the caller's: the default of World is only a label
    return World()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _cpu_threads(local_size: int) -> int:
    """Threads per process: the cores this process may use, shared by the processes on this
    machine; an OMP_NUM_THREADS other than torchrun's default of 1 wins."""
    wanted = os.environ.get("OMP_NUM_THREADS", "1")
    if wanted != "1" and wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // local_size)


def init(device: str = "cpu", timeout: float = DEFAULT_TIMEOUT) -> World:
    """Join the process group that torchrun's environment describes; the one-process world
    (nothing joined) when it describes one process or none.

    Args:
        device: ``"cpu"`` (gloo) or ``"cuda"`` (NCCL, one GPU per process: ``cuda:<LOCAL_RANK>``).
        timeout: seconds that joining the group and each collective may wait for the other ranks.

    Raises:
        ValueError: an unknown device, no CUDA device for this rank, a malformed environment, or
            a timeout that is not a positive number.
        PeerLost: the other ranks did not all join within ``timeout``.
    """
    global _current
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    if not (isinstance(timeout, (int, float)) and 0 < timeout < 1e7):
        raise ValueError(f"--dist-timeout must be a positive number of seconds, got {timeout!r}")
    rank, size = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank, local_size = _env_int("LOCAL_RANK", 0), _env_int("LOCAL_WORLD_SIZE", size)
    if not (size >= 1 and 0 <= rank < size and 0 <= local_rank < local_size):
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={size}, "
                         f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_size}")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available to this process")
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"--device cuda: local rank {local_rank} needs GPU {local_rank}, but this machine "
                f"has {torch.cuda.device_count()}; start at most that many processes per machine"
            )
        where = torch.device("cuda", local_rank)
        torch.cuda.set_device(where)
    else:
        where = torch.device("cpu")
    if size == 1:
        _current = World(device=where, timeout=timeout)
        return _current
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"WORLD_SIZE={size} but {name} is not set: start the processes with torchrun")
    if where.type == "cpu":
        torch.set_num_threads(_cpu_threads(local_size))
        backend = "gloo"
    else:
        backend = "nccl"
    world = World(rank, size, local_rank, local_size, where, timeout)
    wait = datetime.timedelta(seconds=timeout)
    with world.collective("joining the process group"):
        shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's store, all rounds'
        store = _round_store(rank, size, wait) if shared else None
        tdist.init_process_group(
            backend, rank=rank, world_size=size, timeout=wait, store=store,
            device_id=where if where.type == "cuda" else None,
        )
    _current = world
    log.debug("rank %d of %d joined (%s on %s, %d CPU threads)",
              rank, size, backend, where, torch.get_num_threads())
    return _current


def _round_store(rank: int, size: int, timeout: datetime.timedelta) -> tdist.Store:
    """The store torchrun's agents share, under a prefix that no earlier round of the job used.

    torchrun (c10d rendezvous) keeps one TCPStore for all the rounds of a job, restarts and
    membership changes alike, and the process group's keys do not name the round: a restarted
    worker could read the address a worker of the previous round published, connect to a dead
    process and wait forever in gloo's connectFullMesh. So rank 0 makes up a fresh name, and
    hands it to each rank through a key that only this round can name: rank r's count of
    arrivals, which every worker of rank r increments once as it starts (rounds do not overlap:
    torchrun stops every worker before the next rendezvous).
    """
    store = tdist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=timeout)
    arrival = store.add(f"scratchrnn/arrivals/{rank}", 1)
    if rank == 0:
        name = os.urandom(8).hex()
        waiting = set(range(1, size))
        deadline = time.monotonic() + timeout.total_seconds()
        while waiting:
            for r in sorted(waiting):
                store.set(f"scratchrnn/offer/{r}/{store.add(f'scratchrnn/arrivals/{r}', 0)}", name)
                if store.check([f"scratchrnn/taken/{name}/{r}"]):
                    waiting.discard(r)
            if waiting and time.monotonic() > deadline:
                missing = ", ".join(map(str, sorted(waiting)))
                raise TimeoutError(f"rank(s) {missing} did not arrive (Timed out)")
            time.sleep(0.01)
    else:
        key = f"scratchrnn/offer/{rank}/{arrival}"
        store.wait([key])
        name = store.get(key).decode()
        store.set(f"scratchrnn/taken/{name}/{rank}", "1")
    return tdist.PrefixStore(f"scratchrnn/{name}", store)


def shutdown() -> None:
    """Leave the process group that :func:`init` joined, if it joined one."""
    global _current
    if _current is not None and _current.size > 1 and tdist.is_initialized():
        tdist.destroy_process_group()
    _current = None


@contextlib.contextmanager
def launched(device: str = "cpu", timeout: float = DEFAULT_TIMEOUT) -> Iterator[World]:
    """``with launched(device) as world:`` — :func:`init`, then :func:`shutdown` however it ends."""
    world = init(device, timeout)
    try:
        yield world
    finally:
        shutdown()


# --- stop signals while the main thread waits inside a C call ------------------------------------

# Seconds the main thread has to act on a stop signal by itself before the watchdog ends the
# process: outside the training loop (the Python handler raises at once if it can run at all),
# and inside it with several processes (a step, the agreement, the checkpoint; torchrun sends
# SIGKILL 30 s after its SIGTERM). One process in its loop waits for nothing: no limit there.
GRACE = 3.0
LOOP_GRACE = 25.0

_grace: list[float | None] = [GRACE]  # a stack: the innermost stop_grace() is the last item


@contextlib.contextmanager
def stop_grace(seconds: float | None) -> Iterator[None]:
    """Inside, a stop signal leaves the main thread ``seconds`` (None: all the time it needs) to
    stop by itself before :func:`watch_stop_signals`'s watchdog ends the process."""
    _grace.append(seconds)
    try:
        yield
    finally:
        _grace.pop()


@contextlib.contextmanager
def watch_stop_signals(name: str) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM end the process within seconds even when the main thread
    waits inside a C call; enter it from the main thread once Python handlers for
    :data:`STOP_SIGNALS` are installed.

    Python runs a handler in the main thread between two bytecodes, so no handler runs while that
    thread waits inside gloo (joining the group, a collective whose peer has gone), and torchrun's
    SIGTERM would wait for the timeout, then be followed by its SIGKILL. Python's C-level handler
    still writes the signal's number to the wakeup fd at once: a daemon thread reads it, leaves
    the main thread the grace of :func:`stop_grace` to stop by itself (the training loop saves a
    checkpoint first; elsewhere the handler raises), and otherwise writes one line, ``NAME:
    stopped by SIGTERM ...``, and ends the process with status 128 + the signal's number.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    done = threading.Event()

    def watch() -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data or done.is_set():  # the write end closed: the watch is over
                return
            stops = [b for b in data if b in (int(s) for s in STOP_SIGNALS)]
            if not stops:
                continue
            grace = _grace[-1]
            if grace is None or done.wait(grace):
                continue
            signum = stops[0]
            line = (f"{name}: stopped by {signal.Signals(signum).name} (the main thread did not stop "
                    f"within {grace:g} s: it was waiting inside a C call, e.g. for a peer)\n")
            with contextlib.suppress(OSError):
                sys.stderr.flush()
                os.write(2, line.encode())
            os._exit(128 + signum)

    thread = threading.Thread(target=watch, name="scratchrnn-stop-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        signal.set_wakeup_fd(previous)
        os.close(write_fd)
        thread.join(timeout=1.0)
        os.close(read_fd)
