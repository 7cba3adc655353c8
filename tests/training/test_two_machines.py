"""Two machines through Accelerate: two `accelerate launch --num_machines 2 --machine_rank R` on this host, one process
each, meeting on 127.0.0.1 (the nodes share this filesystem, as nodes with output_dir on shared storage do).

Training matches one process, a node killed after a complete checkpoint resumes to the same model, and batch scoring
writes the same bytes as one process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from helpers import PAIRS, REPO, write_recipe

from pipeline.training.checkpoints import COMPLETE

# As in test_scale_and_resume.py (fp32, random batch order, 16 pairs a step; TRL turns dropout off), but 8 steps with
# a checkpoint at step 4: each two-machine launch spends most of its time importing, on 2 cores.
RUN = {"max_steps": 8, "save_steps": 4, "train_sampling_strategy": "random", "per_device_train_batch_size": 16,
       "bf16": False}  # fmt: skip
# One thread per process: two "machines" on one host would otherwise each take every core.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
TIMEOUT_S = 300
# pipeline/train.py, telling which node ran the data step (on shared storage only machine rank 0 does).
NODE_SCRIPT = """
import os, sys
from pipeline.training import run
build = run.build_dataset
def build_and_say(*args, **kwargs):
    print(f"rank {os.environ['RANK']} built the dataset", flush=True)
    return build(*args, **kwargs)
run.build_dataset = build_and_say
from pipeline.cli.train import main
main(sys.argv[1:])
"""

Node = namedtuple("Node", "returncode stdout stderr")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_machines(logs: Path, *command: str) -> list[subprocess.Popen]:
    """Machine ranks 0 and 1, started together (each waits for the other at the rendezvous)."""
    port, processes = free_port(), []
    logs.mkdir(parents=True, exist_ok=True)
    for rank in (0, 1):
        argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_config.yaml",
                "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                "--main_process_port", str(port), "--num_processes", "2", *command]  # fmt: skip
        with open(logs / f"{rank}.out", "w") as out, open(logs / f"{rank}.err", "w") as err:  # the child keeps its own
            processes.append(subprocess.Popen(argv, cwd=REPO, env=ENV, stdout=out, stderr=err))
    return processes


def kill_machine(process: subprocess.Popen) -> None:
    """SIGKILL to the launcher and everything under it: the machine is gone (its worker runs in its own session)."""
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()


def finish(processes: list[subprocess.Popen], logs: Path) -> list[Node]:
    deadline = time.monotonic() + TIMEOUT_S
    try:
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            kill_machine(process)
        raise
    return [
        Node(code, (logs / f"{r}.out").read_text(), (logs / f"{r}.err").read_text()) for r, code in enumerate(codes)
    ]


def train_two_machines(recipe: Path, logs: Path) -> list[Node]:
    script = logs.parent / "node.py"
    script.write_text(NODE_SCRIPT)
    return finish(start_machines(logs, str(script), "--config", str(recipe)), logs)


def margins(output_dir: Path) -> np.ndarray:
    """score(chosen) - score(rejected) of every held-out pair: what pairwise accuracy is decided on."""
    pairs = pd.read_json(output_dir / "evaluation" / "pairs.jsonl", lines=True)
    return (pairs["chosen_score"] - pairs["rejected_score"]).to_numpy()


def accuracy(output_dir: Path) -> float:
    return pd.read_json(output_dir / "eval_results.json", typ="series")["pairwise_accuracy"]


@pytest.fixture(scope="module")
def one_process(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("one")
    recipe = write_recipe(work / "r.yaml", tiny_model_dir, work / "reward_model", **RUN)
    run = subprocess.run([sys.executable, "pipeline/train.py", "--config", str(recipe)], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return work / "reward_model"


def two_machine_recipe(model_dir: Path, work: Path) -> Path:
    """The same global batch of 16 pairs: 8 per process."""
    return write_recipe(work / "r.yaml", model_dir, work / "reward_model", **{**RUN, "per_device_train_batch_size": 8})


def test_two_machines_train_the_same_model_as_one_process(
    one_process: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    main, other = train_two_machines(two_machine_recipe(tiny_model_dir, tmp_path), tmp_path / "logs")
    assert main.returncode == 0, main.stderr[-3000:]
    assert other.returncode == 0, other.stderr[-3000:]
    assert "training: world size 2 (MULTI_CPU)" in main.stdout  # one process per machine, two in all
    # On shared storage the data step runs once, on machine rank 0; rank 1 loads its result.
    assert "rank 0 built the dataset" in main.stdout and "built the dataset" not in other.stdout
    assert main.stdout.count("saved reward model to") == 1 and "saved" not in other.stdout  # only rank 0 writes
    output_dir = tmp_path / "reward_model"
    assert accuracy(output_dir) == accuracy(one_process)
    np.testing.assert_allclose(margins(output_dir), margins(one_process), rtol=0, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "node.py", "r.yaml", "reward_model"]


def test_a_machine_killed_after_a_checkpoint_resumes_to_the_same_model(
    one_process: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    recipe, logs = two_machine_recipe(tiny_model_dir, tmp_path), tmp_path / "logs"
    (tmp_path / "node.py").write_text(NODE_SCRIPT)
    machines = start_machines(logs, str(tmp_path / "node.py"), "--config", str(recipe))
    marker = tmp_path / ".reward_model.checkpoints" / "checkpoint-4" / COMPLETE
    deadline = time.monotonic() + TIMEOUT_S
    while not marker.is_file():  # written by rank 0 once both processes saved their part of checkpoint-4
        assert all(m.poll() is None for m in machines) and time.monotonic() < deadline, "no checkpoint-4"
        time.sleep(0.05)
    killed_at = time.monotonic()
    kill_machine(machines[1])
    main, other = finish(machines, logs)
    assert other.returncode == -signal.SIGKILL
    # Rank 0 loses its peer in the next collective and stops, instead of waiting out ddp_timeout (30 minutes).
    assert main.returncode != 0 and time.monotonic() - killed_at < 60
    assert not (tmp_path / "reward_model").exists()  # it stopped before the end: nothing saved

    main, other = train_two_machines(recipe, tmp_path / "logs-rerun")
    assert main.returncode == 0, main.stderr[-3000:]
    assert other.returncode == 0, other.stderr[-3000:]
    # checkpoint-4, or a later one when the kill came after rank 0 had completed it too
    assert f"resuming from {tmp_path / '.reward_model.checkpoints' / 'checkpoint-'}" in main.stdout
    assert not (tmp_path / ".reward_model.checkpoints").exists()
    assert accuracy(tmp_path / "reward_model") == accuracy(one_process)
    np.testing.assert_allclose(margins(tmp_path / "reward_model"), margins(one_process), rtol=0, atol=1e-6)


def test_scoring_on_two_machines_writes_the_same_bytes_as_one_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [(f"{p} #{i}", r * (1 + i % 3)) for i in range(9) for p, r in PAIRS]  # 63 rows of varied lengths
    source = tmp_path / "rows.csv"
    pd.DataFrame({"id": range(len(rows)), "prompt": [p for p, _ in rows], "response": [r for _, r in rows]}).to_csv(
        source, index=False
    )
    common = ["--model", str(tiny_model_dir), "--input", str(source), "--batch_size", "4", "--rank", "--no_progress",
              "--num_threads", "1"]  # fmt: skip
    one = subprocess.run([sys.executable, "-m", "pipeline.score", *common, "--output", str(tmp_path / "one.csv")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=TIMEOUT_S)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    logs = tmp_path / "logs"
    main, other = finish(start_machines(logs, "-m", "pipeline.score", *common, "--output", str(tmp_path / "two.csv")),
                         logs)  # fmt: skip
    assert main.returncode == 0, main.stderr[-3000:]
    assert other.returncode == 0, other.stderr[-3000:]
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert "wrote" in main.stderr and "wrote" not in other.stderr  # rank 0 writes the one output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "one.csv", "rows.csv", "two.csv"]
