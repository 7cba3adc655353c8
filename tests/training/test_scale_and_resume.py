"""Scale-out and fault tolerance: 1 vs 2 processes, determinism, resume after SIGKILL, refusing to overwrite, disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import REPO, write_recipe

# 10 steps of 16 pairs (no partial batch anywhere), a checkpoint every 4 steps, random batch order.
# fp32 everywhere (bf16 auto would pick bf16 on some CPUs): these tests compare runs to float rounding.
RUN = {"max_steps": 10, "save_steps": 4, "train_sampling_strategy": "random", "per_device_train_batch_size": 16,
       "bf16": False}  # fmt: skip
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
# Kills the training process with SIGKILL while it writes the checkpoint of step KILL_AT_STEP (model weights
# written, optimizer not yet): a crash in the worst place, leaving a torn checkpoint behind.
KILLER = """
import os, signal, sys
from transformers import Trainer
step = int(os.environ["KILL_AT_STEP"])
original = Trainer._save_optimizer_and_scheduler
def save_then_die(self, output_dir):
    if self.state.global_step == step:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, output_dir)
Trainer._save_optimizer_and_scheduler = save_then_die
from pipeline.cli.train import main
main(sys.argv[1:])
"""

Run = namedtuple("Run", "returncode stdout stderr output_dir")


def train(
    recipe: Path, *args: str, launcher: tuple[str, ...] = (sys.executable, "pipeline/train.py"), **env: str
) -> Run:
    result = subprocess.run([*launcher, "--config", str(recipe), *args], cwd=REPO, env={**ENV, **env},
                            capture_output=True, text=True)  # fmt: skip
    output_dir = Path(next(line.split(": ", 1)[1] for line in recipe.read_text().splitlines()
                           if line.startswith("output_dir")).strip('"'))  # fmt: skip
    return Run(result.returncode, result.stdout, result.stderr, output_dir)


def scores(output_dir: Path) -> pd.DataFrame:
    return pd.read_json(output_dir / "evaluation" / "pairs.jsonl", lines=True)


def margins(output_dir: Path) -> np.ndarray:
    """score(chosen) - score(rejected) of every held-out pair: what pairwise accuracy is decided on."""
    pairs = scores(output_dir)
    return (pairs["chosen_score"] - pairs["rejected_score"]).to_numpy()


def results(output_dir: Path) -> dict:
    return json.loads((output_dir / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    work = tmp_path_factory.mktemp("reference")
    run = train(write_recipe(work / "r.yaml", tiny_model_dir, work / "reward_model", **RUN))
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_same_recipe_and_seed_give_identical_results(reference: Run, tiny_model_dir: Path, tmp_path: Path) -> None:
    again = train(write_recipe(tmp_path / "r.yaml", tiny_model_dir, tmp_path / "reward_model", **RUN))
    assert again.returncode == 0, again.stderr[-3000:]
    assert scores(again.output_dir).equals(scores(reference.output_dir))
    assert (again.output_dir / "model.safetensors").read_bytes() == (
        reference.output_dir / "model.safetensors"
    ).read_bytes()
    first, second = results(reference.output_dir), results(again.output_dir)
    for key in ("pairwise_accuracy", "num_pairs", "num_correct", "reward_mean", "reward_std"):
        assert first[key] == second[key]


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_processes_match_one(engine: str, reference: Run, tiny_model_dir: Path, tmp_path: Path) -> None:
    """DDP over 2 CPU processes (gloo) with half the per-process batch sees the same 16-pair batches; the shipped
    FSDP config runs there too (as DDP: FSDP needs GPUs)."""
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, tmp_path / "reward_model",
                          **{**RUN, "per_device_train_batch_size": 8})  # fmt: skip
    # The shipped config as a user runs it; on a machine without GPUs its processes use gloo on the CPU.
    # (`accelerate launch --cpu --num_processes 2` would start ONE process: --cpu always uses the simple launcher.)
    launcher = (sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(REPO / f"recipes/accelerate/{engine}.yaml"), "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "pipeline/train.py")  # fmt: skip
    two = train(recipe, launcher=launcher)
    assert two.returncode == 0, two.stderr[-3000:]
    one_results, two_results = results(reference.output_dir), results(two.output_dir)
    assert two_results["num_pairs"] == one_results["num_pairs"]  # every held-out pair exactly once
    assert two_results["pairwise_accuracy"] == one_results["pairwise_accuracy"]
    # All-reduced gradients differ from one process's only in float rounding: every pair's reward difference agrees
    # to 1e-6. (Raw scores may share a common offset: the pairwise loss cannot see a shift of all rewards, so that
    # direction only collects rounding noise, which AdamW scales up. Use reward_mean/reward_std to compare scores.)
    np.testing.assert_allclose(margins(two.output_dir), margins(reference.output_dir), rtol=0, atol=1e-6)
    assert "world size 2 (MULTI_CPU)" in two.stdout  # really two processes, not one with half the batch
    # FSDP needs GPUs: on CPU Accelerate runs DDP instead, and the user is told so.
    assert ("asks for FSDP, which needs GPUs; running DDP on CPU" in two.stdout) == (engine == "fsdp")
    assert two.stdout.count("saved reward model to") == 1  # only the main process writes
    assert not [p for p in two.output_dir.parent.iterdir() if p.name.startswith(".")]


def test_sigkill_mid_checkpoint_then_rerun_resumes_to_the_same_model(
    reference: Run, tiny_model_dir: Path, tmp_path: Path
) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, tmp_path / "reward_model", **RUN)
    killed = train(recipe, launcher=(sys.executable, "-c", KILLER), KILL_AT_STEP="8")
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = tmp_path / ".reward_model.checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert not (tmp_path / "reward_model").exists()  # nothing half-written where the model goes

    other = train(recipe, "--learning_rate", "5e-4")
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1].startswith(f"error: {checkpoints} holds checkpoints of a different")
    assert "learning_rate 0.001 -> 0.0005" in other.stderr

    resumed = train(recipe)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {checkpoints / 'checkpoint-4'}" in resumed.stdout  # the torn checkpoint-8 is skipped
    assert not checkpoints.exists()
    assert results(resumed.output_dir)["pairwise_accuracy"] == results(reference.output_dir)["pairwise_accuracy"]
    np.testing.assert_allclose(margins(resumed.output_dir), margins(reference.output_dir), rtol=0, atol=1e-6)


# The recipes' default batch order (length-grouped), several epochs: 4 steps of 64 pairs per epoch, checkpoints at
# steps 3, 6 and 9. Killed while writing checkpoint-9, the rerun resumes from checkpoint-6, two steps into epoch 1.
RESUME_RUN = {"max_steps": 10, "save_steps": 3, "train_sampling_strategy": "group_by_length",
              "per_device_train_batch_size": 64}  # fmt: skip


def test_resume_mid_epoch_with_length_grouped_batches_reaches_the_same_model(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    straight = train(write_recipe(tmp_path / "a.yaml", tiny_model_dir, tmp_path / "a" / "reward_model", **RESUME_RUN))
    assert straight.returncode == 0, straight.stderr[-3000:]
    recipe = write_recipe(tmp_path / "b.yaml", tiny_model_dir, tmp_path / "b" / "reward_model", **RESUME_RUN)
    killed = train(recipe, launcher=(sys.executable, "-c", KILLER), KILL_AT_STEP="9")
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = train(recipe)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-6" in resumed.stdout
    # Epoch 1's batches are the same as in the uninterrupted run: the ones trained before the crash are skipped,
    # none is trained twice or missed.
    np.testing.assert_allclose(margins(resumed.output_dir), margins(straight.output_dir), rtol=0, atol=1e-6)


def test_existing_model_is_not_overwritten_unless_the_recipe_says_so(reference: Run, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(Path(reference.output_dir.parent / "r.yaml").read_text())
    before = (reference.output_dir / "model.safetensors").read_bytes()
    refused = train(recipe)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: output_dir {reference.output_dir} already holds a trained model; to replace it set "
        "overwrite_output_dir: true in the recipe (or pass --overwrite_output_dir true), or choose another output_dir"
    ]
    assert (reference.output_dir / "model.safetensors").read_bytes() == before


def test_full_disk_is_one_line_before_training(tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    import shutil

    from pipeline.cli import train as train_module
    from pipeline.training import run as run_module

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_module.shutil, "disk_usage", lambda _: usage._replace(free=10 << 20))
    monkeypatch.setattr(run_module.PairwiseRewardTrainer, "train", lambda *a, **k: pytest.fail("trained"))
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, tmp_path / "reward_model", **RUN)
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(["--config", str(recipe)])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: output_dir {tmp_path / 'reward_model'}: not enough free disk space")
    assert "10 MB free" in error
    assert not (tmp_path / "reward_model").exists()


def test_accelerate_configs_name_their_engine() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"single_gpu": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED"}
    for name, engine in expected.items():
        config = load_config_from_file(str(REPO / "recipes/accelerate" / f"{name}.yaml"))
        assert config.distributed_type.value == engine
        assert config.mixed_precision == "no"  # precision comes from the recipe (bf16 on capable GPUs)
    fsdp = load_config_from_file(str(REPO / "recipes/accelerate/fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert load_config_from_file(str(REPO / "accelerate_config.yaml")).distributed_type.value == "MULTI_GPU"
