"""Fault tolerance under torchrun: a killed worker, a stopped (hung) worker, a SIGTERMed agent and a
lost node, each on localhost with gloo, a tiny model and a bounded time.

Every job is one command line, the same for the first start and each restart: ``torchrun ...
--max-restarts R --rdzv-backend c10d ... -m scratchrnn train --auto-resume ...``. When a worker
fails, torchrun stops the others and starts them all again; they resume from the last checkpoint
(every ``--checkpoint-interval`` steps). The faults land at steps drawn at random, from a seed
printed with each test (set SCRATCHRNN_FAULT_SEED to replay one). A run with a fault must end
bit-identical (parameters and optimizer state) to the same run without one on the same number of
processes; after a change of world size, the difference is measured and reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from scratchrnn.lm.checkpoint import load_checkpoint
from scratchrnn.lm.data import read_text

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="gloo on 'lo', /proc"),
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="torch without gloo",
    ),
]

STEPS = 120
# A tiny model; checkpoints every 8 steps, a validation every 40; the whole run takes seconds.
FLAGS = ["--hidden-size", "16", "--embedding-dim", "4", "--batch-size", "4", "--seq-len", "8",
         "--eval-streams", "4", "--eval-interval", "40", "--checkpoint-interval", "8", "--log-interval", "1",
         "--sample-length", "0", "--lr", "0.01", "--warmup-steps", "5", "--time-budget", "0",
         "--max-steps", str(STEPS), "--no-progress"]
TIMEOUT = 60  # seconds any one job may take here (each scenario takes well under it)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    """Gloo on the loopback only, one thread per worker, warnings as errors."""
    return {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error",
            **extra}


def train_argv(corpus: str, out: Path, *more: str) -> list[str]:
    return ["-m", "scratchrnn", "train", "--auto-resume", "--data", corpus, "--out", str(out), *FLAGS, *more]


def torchrun(corpus: str, out: Path, port: int, *more: str, nnodes: str = "1", nproc: int = 2,
             restarts: int = 3, rdzv_conf: str = "", log_dir: Path | None = None,
             **environ: str) -> subprocess.Popen:
    """An agent with its workers, in a session of its own (so that a test can lose all of it)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc}",
           f"--max-restarts={restarts}", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
           "--rdzv-id=test", "--local-addr=127.0.0.1", "--monitor-interval=0.2"]
    cmd += [f"--rdzv-conf={rdzv_conf}"] if rdzv_conf else []
    cmd += train_argv(corpus, out, *more)
    if log_dir is None:
        return subprocess.Popen(cmd, env=env(**environ), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
    with open(log_dir / f"agent-{port}-{time.monotonic_ns()}.log", "w") as log:  # the agent keeps a copy
        return subprocess.Popen(cmd, env=env(**environ), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def by_hand(corpus: str, out: Path, W: int = 2) -> list[subprocess.Popen]:
    """W workers with the environment torchrun gives them, no agent: the unfaulted runs."""
    port = str(free_port())
    envs = [env(RANK=str(r), WORLD_SIZE=str(W), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE=str(W),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=port) for r in range(W)]
    return [subprocess.Popen([sys.executable, *train_argv(corpus, out)], text=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=e) for e in envs]


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc: no psutil here)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def worker(agent: subprocess.Popen, rank: int) -> int:
    """The PID of the worker of ``rank`` that ``agent`` runs now."""
    for pid in children(agent.pid):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environ and b"TORCHELASTIC_RUN_ID=test" in environ:
            return pid
    raise LookupError(f"no worker of rank {rank} under {agent.pid}")


def last_step(out: Path) -> int:
    try:
        lines = (out / "log.jsonl").read_text().splitlines()
    except OSError:
        return -1
    steps = [json.loads(line)["step"] for line in lines if line.endswith("}")]
    return steps[-1] if steps else -1


def restarted(agent: subprocess.Popen, out: Path, before: set[int], fault_step: int):
    """A condition: workers that were not there at the fault have logged a step past it."""
    return lambda: last_step(out) > fault_step and bool(set(children(agent.pid)) - before)


def wait_until(condition, timeout: float = TIMEOUT, what: str = "") -> float:
    """Seconds until ``condition()`` held (polled every 20 ms); fails after ``timeout``."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - t0


def end(agent: subprocess.Popen, timeout: float = TIMEOUT) -> int:
    """The agent's exit status; it and everything it started are killed if it overstays."""
    try:
        return agent.wait(timeout=timeout)
    finally:
        kill(agent)


def kill(agent: subprocess.Popen) -> None:
    """SIGKILL to the agent's session (its workers too), if it is still there."""
    if agent.poll() is None:
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()


def tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for k in sorted(tree, key=str) for t in tensors(tree[k])]
    return []


def final_state(out: Path) -> list[torch.Tensor]:
    """The parameters and the optimizer state of a finished run (checked to be at its last step)."""
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["step"] == STEPS and ckpt["finished"]
    return tensors({"model": ckpt["model"], "optimizer": ckpt["optimizer"]["state"]})


def largest_difference(a: Path, b: Path) -> float:
    """The largest |difference| over the parameters and the optimizer state of two finished runs."""
    ta, tb = final_state(a), final_state(b)
    assert len(ta) == len(tb) > 0
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(ta, tb, strict=True))


def assert_bit_identical(a: Path, b: Path) -> None:
    ta, tb = final_state(a), final_state(b)
    assert len(ta) == len(tb) > 0
    for x, y in zip(ta, tb, strict=True):
        assert x.dtype == y.dtype and torch.equal(x, y), (x - y).abs().max()


@pytest.fixture(scope="module")
def fault_rng() -> random.Random:
    seed = int(os.environ.get("SCRATCHRNN_FAULT_SEED") or time.time_ns() % 2**32)
    print(f"\nfault seed: {seed} (SCRATCHRNN_FAULT_SEED={seed} replays these faults)")
    return random.Random(seed)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("elastic")


@pytest.fixture(scope="module")
def text(root) -> str:
    path = root / "tiny.txt"
    path.write_text(read_text()[:6000])
    return str(path)


@pytest.fixture(scope="module")
def unfaulted(root, text) -> dict[int, Path]:
    """The runs without a fault, on 2 processes and on 1, that the faulted runs must equal."""
    runs = {2: root / "unfaulted-2", 1: root / "unfaulted-1"}
    procs = by_hand(text, runs[2], 2) + by_hand(text, runs[1], 1)
    for p in procs:
        _, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err
    return runs


def report(what: str, **figures) -> None:
    print(f"\n{what}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in figures.items()))


def test_a_killed_worker_is_restarted_and_the_run_ends_bit_identical(root, text, unfaulted, fault_rng):
    at, rank = fault_rng.randrange(10, STEPS - 30), fault_rng.randrange(2)
    out = root / "killed"
    agent = torchrun(text, out, free_port(), log_dir=root)
    try:
        wait_until(lambda: last_step(out) >= at, what=f"step {at}")
        before = set(children(agent.pid))
        os.kill(worker(agent, rank), signal.SIGKILL)
        t0, fault_step = time.monotonic(), last_step(out)
        recovery = wait_until(restarted(agent, out, before, fault_step), what="the restart")
        assert end(agent) == 0
        total = time.monotonic() - t0
    finally:
        kill(agent)
    assert_bit_identical(out, unfaulted[2])
    report("SIGKILL of a worker", rank=rank, step=fault_step, recovery_s=recovery, fault_to_end_s=total,
           largest_difference=0.0)


def test_a_sigtermed_agent_stops_everything_then_auto_resume_completes(root, text, unfaulted, fault_rng):
    at = fault_rng.randrange(10, STEPS - 30)
    out = root / "sigterm"
    agent = torchrun(text, out, free_port(), log_dir=root)
    try:
        wait_until(lambda: last_step(out) >= at, what=f"step {at}")
        workers = children(agent.pid)
        agent.send_signal(signal.SIGTERM)
        t0, fault_step = time.monotonic(), last_step(out)
        agent.wait(timeout=30)
        gone = wait_until(lambda: not any(Path(f"/proc/{p}").exists() for p in workers), timeout=30 - (
            time.monotonic() - t0), what="the workers to go")
        gone = time.monotonic() - t0
    finally:
        kill(agent)
    saved = load_checkpoint(out / "checkpoint.pt")["step"]
    assert fault_step <= saved < STEPS  # the workers saved the step they were at
    again = torchrun(text, out, free_port(), log_dir=root)  # the same command line
    assert end(again) == 0
    assert_bit_identical(out, unfaulted[2])
    finished = torchrun(text, out, free_port(), log_dir=root)  # once more: nothing left to do
    assert end(finished) == 0 and load_checkpoint(out / "checkpoint.pt")["step"] == STEPS
    report("SIGTERM to the agent", step=fault_step, all_gone_s=gone, largest_difference=0.0)


def test_a_stopped_worker_times_out_and_the_job_recovers(root, text, unfaulted, fault_rng):
    at, rank = fault_rng.randrange(10, STEPS - 30), fault_rng.randrange(2)
    out = root / "stopped"
    agent = torchrun(text, out, free_port(), "--dist-timeout", "2", log_dir=root)
    try:
        wait_until(lambda: last_step(out) >= at, what=f"step {at}")
        before = set(children(agent.pid))
        os.kill(worker(agent, rank), signal.SIGSTOP)  # hung: alive, silent
        fault_step = last_step(out)
        recovery = wait_until(restarted(agent, out, before, fault_step), what="the restart")
        assert end(agent) == 0
    finally:
        kill(agent)
    assert_bit_identical(out, unfaulted[2])
    report("SIGSTOP of a worker, --dist-timeout 2", rank=rank, step=fault_step, recovery_s=recovery,
           largest_difference=0.0)


def lose(agent: subprocess.Popen) -> None:
    """A node lost: its agent and its workers SIGKILLed at once."""
    for pid in [agent.pid, *children(agent.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    agent.wait()


# Rendezvous settings for a fast test: 2 s for a second node after the first has come (torchrun's
# default is 30 s), a node's heartbeat every second, and it is dead after 2 missed ones.
FAST_RDZV = "last_call_timeout=2,keep_alive_interval=1,keep_alive_max_attempt=2,join_timeout=40"


def test_a_lost_node_leaves_the_other_to_finish_alone(root, text, unfaulted, fault_rng):
    at = fault_rng.randrange(10, STEPS - 30)
    out, port = root / "lost-node", free_port()
    first = torchrun(text, out, port, nnodes="1:2", nproc=1, rdzv_conf=FAST_RDZV, log_dir=root)
    time.sleep(0.5)  # the first agent hosts the rendezvous store; the second node is the one lost
    second = torchrun(text, out, port, nnodes="1:2", nproc=1, rdzv_conf=FAST_RDZV, log_dir=root)
    try:
        wait_until(lambda: last_step(out) >= at, what=f"step {at}")
        assert load_checkpoint(out / "checkpoint.pt")["world_size"] == 2  # both nodes trained
        before = set(children(first.pid))
        lose(second)
        fault_step = last_step(out)
        recovery = wait_until(restarted(first, out, before, fault_step), what="the restart")
        assert end(first) == 0
    finally:
        kill(first)
        kill(second)
    assert load_checkpoint(out / "checkpoint.pt")["world_size"] == 1
    d2, d1 = largest_difference(out, unfaulted[2]), largest_difference(out, unfaulted[1])
    assert d2 < 1e-4 and d1 < 1e-4  # float32 rounding of a different reduction order
    report("a node lost (2 -> 1 processes)", step=fault_step, recovery_s=recovery,
           largest_difference_vs_2=d2, largest_difference_vs_1=d1)


def test_a_node_that_joins_grows_the_job(root, text, fault_rng):
    """One node trains alone; a second starts: torchrun stops the first node's worker (it saves
    its step) and both resume from that checkpoint at world size 2. Needs torch's
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1: with the store shared across rounds (torch 2.13), the
    rank-0 agent does not publish the store's address for the new round, and both agents wait."""
    at = fault_rng.randrange(20, 300)
    out, port = root / "joined", free_port()
    job = dict(nnodes="1:2", nproc=1, rdzv_conf="last_call_timeout=1", log_dir=root,
               TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    more = ("--max-steps", "1000000", "--eval-interval", "1000000")  # stopped below, once grown
    first = torchrun(text, out, port, *more, **job)
    second = None
    try:
        wait_until(lambda: last_step(out) >= at, what=f"step {at}")
        assert load_checkpoint(out / "checkpoint.pt")["world_size"] == 1  # alone so far
        second = torchrun(text, out, port, *more, **job)
        t0 = time.monotonic()
        wait_until(lambda: load_checkpoint(out / "checkpoint.pt")["world_size"] == 2, what="the job to grow")
        grown, joined_at = time.monotonic() - t0, load_checkpoint(out / "checkpoint.pt")["step"]
        wait_until(lambda: last_step(out) > joined_at + 10, what="training on two nodes")
        for agent in (first, second):
            agent.send_signal(signal.SIGTERM)  # the workers save and stop
        for agent in (first, second):
            agent.wait(timeout=30)
    finally:
        kill(first)
        if second is not None:
            kill(second)
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] > joined_at
    report("a node joined (1 -> 2 processes)", step=joined_at, second_start_to_grown_s=grown)


# --------------------------------------------------------------------------------------------
# The flags one at a time: --auto-resume, --checkpoint-interval, --dist-timeout, stop signals.
# --------------------------------------------------------------------------------------------

SMALL = ["--hidden-size", "16", "--embedding-dim", "4", "--batch-size", "4", "--seq-len", "8",
         "--eval-streams", "4", "--sample-length", "0", "--time-budget", "0", "--no-progress"]


def test_auto_resume_starts_resumes_and_knows_a_finished_run(tmp_path, corpus, capsys):
    from scratchrnn.apps import cli

    out = tmp_path / "run"
    argv = ["train", "--auto-resume", "--data", corpus, "--out", str(out), *SMALL, "--eval-interval", "4"]
    assert cli.main([*argv, "--max-steps", "4"]) == 0  # nothing there: a new run
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4
    assert cli.main([*argv, "--max-steps", "4"]) == 0  # finished: said, and nothing trained
    assert "is finished (step 4" in capsys.readouterr().out
    assert cli.main([*argv, "--max-steps", "6"]) == 0  # a later end: resumed
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 6
    assert cli.main([*argv, "--max-steps", "8", "--lr", "0.5"]) == 2  # refused as --resume refuses it
    assert "lr cannot change when resuming" in capsys.readouterr().err
    assert cli.main([*argv, "--resume"]) == 2
    assert "--auto-resume excludes --resume and --force" in capsys.readouterr().err


def test_auto_resume_restarts_a_run_killed_before_its_first_checkpoint(tmp_path, corpus, capsys):
    """What a kill before the first checkpoint leaves (config.json, the log's first records) is the
    start of the same run: started again, not refused; the start of another run is refused."""
    from scratchrnn.apps import cli

    out = tmp_path / "run"
    argv = ["train", "--auto-resume", "--data", corpus, "--out", str(out), *SMALL, "--max-steps", "3"]
    assert cli.main(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    for name in ("checkpoint.pt", "best.pt", "loss.png"):
        (out / name).unlink()
    (out / "log.jsonl").write_text('{"step": 1, "time": 0.1, "train_loss": 4.0, "lr": 0.001}\n')
    assert cli.main([*argv, "--lr", "0.01"]) == 2  # other settings: not this run's start
    assert "holds the start of another run" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text()) == saved  # left as it was
    assert cli.main(argv) == 0
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3 and not (out / ".replaced").exists()


def test_auto_resume_from_python(tmp_path, corpus):
    from scratchrnn.lm.config import TrainConfig
    from scratchrnn.lm.train import train

    config = TrainConfig(data=corpus, out=str(tmp_path / "run"), hidden_size=16, embedding_dim=4,
                         batch_size=4, seq_len=8, eval_streams=4, sample_length=0, time_budget=None,
                         progress=False, max_steps=3)
    assert train(config, auto=True).step == 3
    assert train(config, auto=True) is None  # finished
    assert train(dataclasses.replace(config, max_steps=5), auto=True).step == 5
    with pytest.raises(ValueError, match="auto excludes resume and force"):
        train(config, resume=True, auto=True)


def test_checkpoints_follow_their_own_cadence(tmp_path, corpus, monkeypatch):
    from scratchrnn.lm import train as train_module

    saved: list[int] = []
    original = train_module.Trainer.save_checkpoint

    def save(self, path=None):
        if path is None:
            saved.append(self.step)
        return original(self, path)

    monkeypatch.setattr(train_module.Trainer, "save_checkpoint", save)
    config = train_module.TrainConfig(data=corpus, out=str(tmp_path / "a"), hidden_size=16, embedding_dim=4,
                                      batch_size=4, seq_len=8, eval_streams=4, sample_length=0,
                                      time_budget=None, progress=False, max_steps=10, eval_interval=4,
                                      checkpoint_interval=3)
    train_module.train(config)
    assert saved == [3, 4, 6, 8, 9, 10]  # every 3 steps, every validation (4), and the end
    saved.clear()
    train_module.train(dataclasses.replace(config, out=str(tmp_path / "b"), checkpoint_interval=0,
                                           checkpoint_seconds=1e-9))
    assert saved == list(range(1, 11))  # a nanosecond has passed at every step: each one saves
    with pytest.raises(ValueError, match="checkpoint_interval must be a non-negative integer"):
        dataclasses.replace(config, checkpoint_interval=-1).validate()


HUNG_PEER = """
import sys, time
from scratchrnn.lm import distributed
world = distributed.init("cpu", timeout=float(sys.argv[1]))
if world.rank == 1:
    time.sleep(60)  # alive, but never calls the collective
t0 = time.monotonic()
try:
    world.sum([1.0])
except distributed.PeerLost as err:
    print(f"{time.monotonic() - t0:.1f}", err)
"""


def test_a_hung_peer_is_one_error_after_the_timeout(tmp_path):
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, "-c", HUNG_PEER, "2"], text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                                                              LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                                              MASTER_PORT=port))
             for r in range(2)]
    try:
        out, _ = procs[0].communicate(timeout=TIMEOUT)
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    seconds, message = out.split(" ", 1)
    assert 1.5 < float(seconds) < 10, out
    assert message.startswith("rank 0 of 2: all_reduce failed: a peer did not answer within the "
                              "--dist-timeout of 2 s, or left the job (Timed out"), message


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_a_process_waiting_to_join_within_seconds(tmp_path, corpus, signum):
    """Rank 0 waits inside gloo's C code for a rank 1 that never comes: the Python handler cannot
    run there, and the watchdog ends the process with 128 + the signal and one line."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, *train_argv(corpus, tmp_path / "run"), "--dist-timeout", "300"],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2",
                                    MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
    try:
        def listening() -> bool:  # rank 0 hosts the store: it is inside init_process_group
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(listening, what="rank 0 to wait for its peer")
        time.sleep(0.5)
        proc.send_signal(signum)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=15)
        seconds = time.monotonic() - t0
    finally:
        kill(proc)
    assert proc.returncode == 128 + signum and seconds < 10, (proc.returncode, err)
    assert err.count("\n") == 1 and f"stopped by {signal.Signals(signum).name}" in err, err
    report(f"{signal.Signals(signum).name} while joining", exit_s=seconds)
