"""Data-parallel training: W processes, each on its share of the streams, train the one-process model.

The multi-process tests start real processes on the CPU with gloo, on a free port of 127.0.0.1 only
(gloo bound to the loopback interface): once through ``torchrun -m scratchrnn train``, the way a
user starts it, and otherwise by setting torchrun's environment variables by hand (faster: no
launcher), which is all torchrun does for the workers. Warnings are errors in the workers too.
Rank ≥ 1 workers run under an audit hook (tests/ddp_audit) that refuses any file access under
the test's directory, so a run that succeeds proves that rank 0 alone read and wrote the files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from scratchrnn.lm import distributed
from scratchrnn.lm.checkpoint import load_checkpoint
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.data import StreamBatches, read_text
from scratchrnn.lm.distributed import World, raised_on_every_rank
from scratchrnn.lm.rundir import resume_config
from scratchrnn.lm.train import train

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="gloo on the loopback interface 'lo'"),
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="torch without gloo",
    ),
]

AUDIT = Path(__file__).parent / "ddp_audit"
# A tiny model; 3 validation streams split unevenly over 2 ranks; min_lr_ratio = 1 keeps the lr
# independent of max_steps after the warm-up, so a 6-step run is the start of a 12-step one.
TINY = dict(embedding_dim=8, hidden_size=24, batch_size=4, seq_len=8, warmup_steps=5, lr=1e-2,
            min_lr_ratio=1.0, eval_interval=3, eval_streams=3, log_interval=1, sample_length=20,
            time_budget=None)


# --------------------------------------------------------------------------------------------
# One process: the pieces.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("W", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 8, 9])
def test_shards_partition_the_streams(n, W):
    shards = [World(rank=r, size=W).shard(n) for r in range(W)]
    assert [i for s in shards for i in range(n)[s]] == list(range(n))  # in order, each once
    sizes = [len(range(n)[s]) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    if n % W == 0:
        assert sizes == [n // W] * W


def test_the_global_batch_must_split_evenly():
    World(rank=1, size=4).check_batch_size(64)
    with pytest.raises(ValueError, match=r"global number of .* 6 streams do not split over 4 processes"):
        World(rank=0, size=4).check_batch_size(6)


def test_select_streams():
    batches = StreamBatches(torch.arange(101), batch_size=4, seq_len=5)
    part = batches.select(slice(1, 3))
    assert part.batch_size == 2 and len(part) == len(batches) and part.streams.is_contiguous()
    for k in range(len(batches)):
        assert all(torch.equal(a[:, 1:3], b) for a, b in zip(batches[k], part[k], strict=True))
    assert batches.batch_size == 4  # the original is untouched
    empty = batches.select(slice(4, 4))
    assert empty.batch_size == 0 and empty[0][0].shape == (5, 0)


def test_the_one_process_world():
    w = World()
    assert w.is_main and w.shard(5) == slice(0, 5) and w.wrap(model := torch.nn.Linear(2, 2)) is model
    assert w.sum([1.5, 2]) == [1.5, 2.0] and w.main_value(3.0) == 3.0
    assert w.broadcast("x") == "x" and w.gather(7) == [7]
    assert w.agree(2.5, 0.1, []) == (2.5, 0.1, None)
    assert w.agree(2.5, 0.1, [signal.SIGTERM]) == (2.5, 0.1, signal.SIGTERM)
    assert w.on_main(lambda a, b: a + b, 1, b=2) == 3
    with pytest.raises(FileNotFoundError) as err:
        w.on_main(read_text, "/no/such/file")
    assert raised_on_every_rank(err.value)
    assert not raised_on_every_rank(ValueError("local"))


def test_init_without_torchrun_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with distributed.launched("cpu") as world:
        assert world == World() and distributed.current() is world
    assert distributed.current() == World() and not torch.distributed.is_initialized()
    with pytest.raises(ValueError, match="unknown device 'tpu'; choose from cpu, cuda"):
        distributed.init("tpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        distributed.init()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="inconsistent torchrun environment: RANK=2, WORLD_SIZE=2"):
        distributed.init()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="--device cuda: no CUDA device"):
        distributed.init("cuda")


# --------------------------------------------------------------------------------------------
# Several processes.
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(watch: Path, **extra: str) -> dict[str, str]:
    """What every process of these tests runs with: gloo on the loopback, one thread, warnings
    as errors, and the audit of rank ≥ 1 (see tests/ddp_audit)."""
    path = os.pathsep.join(filter(None, [str(AUDIT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error",
            "PYTHONPATH": path, "SCRATCHRNN_AUDIT_DIR": str(watch), **extra}


def start(argv: list[str], W: int, watch: Path) -> list[subprocess.Popen]:
    """W processes of ``python argv``, with the environment torchrun would give them."""
    port = str(free_port())
    procs = []
    for rank in range(W):
        env = worker_env(watch, RANK=str(rank), WORLD_SIZE=str(W), LOCAL_RANK=str(rank),
                         LOCAL_WORLD_SIZE=str(W), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, *argv], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 90) -> list[tuple[int, str, str]]:
    """(exit status, stdout, stderr) of each process; all are killed if one overstays."""
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def flags(corpus: Path, out: Path, **kw) -> list[str]:
    settings = {**TINY, "data": str(corpus), "out": str(out), "time_budget": 0, **kw}
    argv = ["--no-progress"]
    for name, value in settings.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def config(corpus: Path, out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data": str(corpus), "out": str(out), "progress": False, **kw})


def params(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path, diffs) -> None:
    """Two runs reached the same parameters, hidden state and losses, to float32 rounding."""
    pa, pb = params(a), params(b)
    for name in pa:
        torch.testing.assert_close(pa[name], pb[name], rtol=1e-5, atol=1e-6)
        diffs("distributed: parameters vs the one-process run", (pa[name] - pb[name]).abs().max().item())
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert ca["step"] == cb["step"] and ca["hidden"].shape == cb["hidden"].shape
    torch.testing.assert_close(ca["hidden"], cb["hidden"], rtol=1e-5, atol=1e-6)
    ra, rb = records(a), records(b)
    assert [(r["step"], sorted(r)) for r in ra] == [(r["step"], sorted(r)) for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for key in ("train_loss", "val_loss", "lr"):
            if key in x:
                assert x[key] == pytest.approx(y[key], rel=1e-6), (x, y)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs the tests below compare, made once: 1 and 2 processes for 6 steps, each resumed
    on the other number of processes to step 12, and 1 process for 12 steps without a break."""
    root = tmp_path_factory.mktemp("ddp")
    corpus = root / "tiny.txt"
    corpus.write_text(read_text()[:6000])
    # two processes, started as a user would: torchrun -m scratchrnn train
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "-m", "scratchrnn", "train",
           *flags(corpus, root / "two", max_steps=6)]
    proc = subprocess.Popen(cmd, env=worker_env(root), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # this process shares the CPU with the workers, as they share it
    try:
        train(config(corpus, root / "one", max_steps=6))  # meanwhile, one process in this one
        train(config(corpus, root / "straight", max_steps=12))
        [torchrun] = finish([proc])
        # 1 → 2 processes (started by hand) and 2 → 1
        shutil.copytree(root / "one", root / "one_then_two")
        shutil.copytree(root / "two", root / "two_then_one")
        resumed = start(["-m", "scratchrnn", "train", "--resume", "--max-steps", "12", "--no-progress",
                         "--out", str(root / "one_then_two")], 2, root)
        train(resume_config(root / "two_then_one", max_steps=12), resume=True)
        return root, torchrun, finish(resumed)
    finally:
        torch.set_num_threads(threads)


def test_two_processes_train_the_one_process_model(runs, diffs):
    root, (status, out, err), _ = runs
    assert status == 0, err
    assert out.count("checkpoint: ") == 1 and out.startswith("step 6, ")  # rank 0 alone reports
    assert "Traceback" not in err and "rank 1" not in err
    assert_same_run(root / "two", root / "one", diffs)
    saved = load_checkpoint(root / "two" / "checkpoint.pt")
    assert saved["world_size"] == 2 and saved["hidden"].shape == (1, 4, 24)  # all 4 streams
    names = ["best.pt", "checkpoint.pt", "config.json", "log.jsonl", "loss.png", "samples.txt"]
    assert sorted(os.listdir(root / "two")) == names
    assert (root / "two" / "samples.txt").read_text().count("--- step ") == 2  # one writer


def test_resume_across_numbers_of_processes(runs, diffs):
    root, _, [(s0, out0, err0), (s1, out1, err1)] = runs
    assert (s0, s1) == (0, 0), err0 + err1
    assert out0.startswith("step 12, ") and out1 == "" and err1 == ""
    # 1 → 2 and 2 → 1 both continue the streams' states and reach the uninterrupted run
    assert_same_run(root / "one_then_two", root / "straight", diffs)
    assert_same_run(root / "two_then_one", root / "straight", diffs)
    assert load_checkpoint(root / "one_then_two" / "checkpoint.pt")["world_size"] == 2


def test_the_audit_refuses_other_ranks(tmp_path):
    """The control for the tests above: a rank-1 process that touches the directory fails."""
    code = f"open({str(tmp_path / 'x')!r}, 'w')"
    env = worker_env(tmp_path, RANK="1")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "PermissionError: rank 1 touched the run's files" in result.stderr
    env["RANK"] = "0"
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


COLLECTIVES = textwrap.dedent("""
    import math, signal
    import torch
    from scratchrnn.lm import distributed
    with distributed.launched("cpu") as w:
        r = w.rank
        loss, seconds, sig = w.agree(math.nan if r == 1 else 1.0, 0.5 + r, [signal.SIGTERM] if r else [])
        assert math.isnan(loss) and seconds == 0.5 and sig == signal.SIGTERM, (loss, seconds, sig)
        assert w.agree(1.0 + r, 0.0, [])[0] == 1.5 and w.main_value(10.0 + r) == 10.0
        assert w.sum([r, 1]) == [1.0, 2.0] and w.gather(("rank", r)) == [("rank", 0), ("rank", 1)]
        assert w.broadcast(r) == 0
        try:
            w.on_main(int, "not a number")
        except ValueError as err:
            assert distributed.raised_on_every_rank(err) and "not a number" in str(err)
        else:
            raise AssertionError("on_main did not raise")
    # a process group set up by the caller is the world too
    torch.distributed.init_process_group("gloo")
    assert distributed.current() == distributed.World(r, 2, r, 2), distributed.current()
    torch.distributed.destroy_process_group()
    print("ok", r, w.size)
""")


def test_collectives_agree_across_processes(tmp_path):
    """A NaN or a signal on one rank reaches every rank; clocks and files are rank 0's."""
    results = finish(start(["-c", COLLECTIVES], 2, tmp_path))
    assert [(s, out) for s, out, _ in results] == [(0, "ok 0 2\n"), (0, "ok 1 2\n")], results


def test_a_batch_that_does_not_split_is_one_clear_error(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(read_text()[:6000])
    argv = ["-m", "scratchrnn", "train", *flags(corpus, tmp_path / "run", batch_size=5, max_steps=2)]
    [(s0, _, err0), (s1, _, err1)] = finish(start(argv, 2, tmp_path))
    assert (s0, s1) == (2, 2)
    assert err0 == ("scratchrnn train: error: batch_size is the global number of streams and must be "
                    "divisible by the number of processes: 5 streams do not split over 2 processes\n")
    assert err1 == ""  # rank 0 reports it
    assert not (tmp_path / "run").exists()


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(read_text()[:6000])
    out = tmp_path / "run"
    argv = ["-m", "scratchrnn", "train",
            *flags(corpus, out, max_steps=1_000_000, eval_interval=1_000_000, sample_length=0)]
    procs = start(argv, 2, tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "log.jsonl").exists():
        time.sleep(0.05)
    time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # rank 1 only: rank 0 learns it at the next step
    [(s0, out0, err0), (s1, _, err1)] = finish(procs)
    assert (s0, s1) == (128 + signal.SIGTERM, 128 + signal.SIGTERM), err0 + err1
    assert "stopped by SIGTERM; continue with: torchrun" in err0 and err1 == ""
    saved = load_checkpoint(out / "checkpoint.pt")
    assert saved["step"] == records(out)[-1]["step"] and f"step {saved['step']}," in out0
    assert saved["hidden"].shape == (1, 4, 24)
