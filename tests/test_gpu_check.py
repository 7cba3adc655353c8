"""bench/gpu_check.sh in its CPU dry run: every step runs (tiny), so the prepared GPU check cannot rot."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from helpers import REPO


def test_the_gpu_check_dry_run_passes_every_step_on_the_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    # The tiny model keeps it quick: the dry run checks the script's steps, not the speed.
    command = [
        "bash",
        "bench/gpu_check.sh",
        "--dry-run",
        "--out",
        str(tmp_path / "work"),
        "--base_model",
        str(tiny_model_dir),
    ]
    result = subprocess.run([*command, "--json", str(tmp_path / "r.json")], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = json.loads((tmp_path / "r.json").read_text())["steps"]
    assert set(steps) == {"gpu_tests", "quickstart", "hh_epoch", "score_speed", "fsdp", "grpo", "server"}
    failed = {name: step for name, step in steps.items() if step["ok"] is False}
    assert not failed
    assert steps["quickstart"]["quick_start_accuracy"] == steps["quickstart"]["pairwise_accuracy"]
    assert steps["grpo"]["ok"] and steps["fsdp"]["ok"] and steps["score_speed"]["ok"]
