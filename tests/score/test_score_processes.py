"""Batch scoring on several processes (`accelerate launch -m pipeline.score`): one output, in input order, the same
bytes as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from helpers import PAIRS, REPO

LAUNCH = (sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_config.yaml",
          "--num_processes", "2", "--main_process_port", "0", "-m", "pipeline.score")  # fmt: skip


def test_two_processes_write_the_same_bytes_as_one(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [(f"{p} #{i}", r * (1 + i % 3)) for i in range(9) for p, r in PAIRS]  # 63 rows of varied lengths
    source = tmp_path / "rows.csv"
    pd.DataFrame({"id": range(len(rows)), "prompt": [p for p, _ in rows], "response": [r for _, r in rows]}).to_csv(
        source, index=False
    )
    common = ["--model", str(tiny_model_dir), "--input", str(source), "--batch_size", "4", "--rank", "--no_progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "pipeline.score", *common, "--output", str(tmp_path / "one.csv"),
                          "--num_threads", "1"], cwd=REPO, env=env, capture_output=True, text=True)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([*LAUNCH, *common, "--output", str(tmp_path / "two.csv"), "--num_threads", "1"], cwd=REPO,
                         env=env, capture_output=True, text=True)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv", "rows.csv", "two.csv"]  # nothing left over
