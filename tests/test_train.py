"""End to end: `accelerate launch pipeline/train.py` on a tiny recipe, then the original Quick Start, unchanged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, launch, write_recipe

from pipeline.data import build_dataset


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    work = tmp_path_factory.mktemp("e2e")
    recipe = write_recipe(work / "tiny.yaml", tiny_model_dir, work / "reward_model")
    result = launch("--config", str(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "reward_model", recipe, result


def test_train_saves_a_loadable_model_with_card_and_results(trained) -> None:
    output_dir, _, result = trained
    names = {p.name for p in output_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "eval_results.json", "data_report.json"} <= names  # fmt: skip
    assert not [p for p in output_dir.parent.iterdir() if ".tmp-" in p.name or ".checkpoints" in p.name]
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert 0.0 <= results["pairwise_accuracy"] <= 1.0 and results["num_pairs"] > 0
    card = (output_dir / "README.md").read_text()
    assert f"{results['pairwise_accuracy']:.4f}" in card and "None" not in card
    assert "data: " in result.stdout and "pairs" in result.stdout
    evaluation = output_dir / "evaluation"
    assert {p.name for p in evaluation.iterdir()} == {"pairs.jsonl", "summary.json", "report.md", "report.png"}
    summary = json.loads((evaluation / "summary.json").read_text())
    assert summary["model"]["pairwise_accuracy"] == results["pairwise_accuracy"]
    assert set(summary["baselines"]) == {"longer answer wins", "shorter answer wins", "untrained base model"}
    assert len((evaluation / "pairs.jsonl").read_text().splitlines()) == results["num_pairs"]
    config = json.loads((output_dir / "config.json").read_text())
    assert config["reward_std"] > 0 and config["reward_mean"] == results["reward_mean"]
    assert "model-index:" in card and "pairwise accuracy" in card


def test_quick_start_reproduces_the_reported_accuracy_exactly(trained) -> None:
    output_dir, _, _ = trained
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    # The original project's Quick Start, unchanged.
    model = AutoModelForSequenceClassification.from_pretrained(str(output_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(output_dir))

    def score(prompt: str, response: str) -> float:
        inputs = tokenizer(prompt, response, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            return model(**inputs).logits.item()

    results = json.loads((output_dir / "eval_results.json").read_text())
    dataset, _ = build_dataset(REPO / "data/answers.csv", test_size=0.2, split_seed=42)
    held_out = dataset["test"]
    correct = sum(score(p, c) > score(p, r) for p, c, r in zip(held_out["prompt"], held_out["chosen"],
                                                                held_out["rejected"], strict=True))  # fmt: skip
    assert held_out.num_rows == results["num_pairs"]
    assert correct == results["num_correct"]
    assert correct / held_out.num_rows == results["pairwise_accuracy"]


def test_evaluation_cli_matches_training_report(trained) -> None:
    output_dir, _, _ = trained
    held_out = output_dir.parent / "held_out"
    dataset, _ = build_dataset(REPO / "data/answers.csv", test_size=0.2, split_seed=42)
    dataset.save_to_disk(str(held_out))
    out = output_dir.parent / "eval_out"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.evaluation", "--model", str(output_dir), "--data", str(held_out),
         "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout[result.stdout.index("{") : result.stdout.rindex("}") + 1])
    trained_results = json.loads((output_dir / "eval_results.json").read_text())
    assert printed["pairwise_accuracy"] == trained_results["pairwise_accuracy"]
    assert printed["num_pairs"] == trained_results["num_pairs"]
    assert json.loads((out / "eval_results.json").read_text())["num_pairs"] == printed["num_pairs"]


def test_rerun_replaces_the_model_whole(trained, tiny_model_dir: Path) -> None:
    output_dir, recipe, _ = trained
    before = (output_dir / "model.safetensors").read_bytes()
    result = launch("--config", str(recipe), "--learning_rate", "3e-3", "--max_steps", "2", "--force_push", "true",
                    "--overwrite_output_dir", "true")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output_dir / "model.safetensors").read_bytes() != before
    assert not [p for p in output_dir.parent.iterdir() if p.name.startswith(".")]


def test_quality_gate_refuses_to_replace_and_keeps_both_models(trained) -> None:
    output_dir, recipe, _ = trained
    before = (output_dir / "model.safetensors").read_bytes()
    candidate = output_dir.with_name("reward_model-candidate")
    result = subprocess.run(
        [sys.executable, "pipeline/train.py", "--config", str(recipe), "--max_steps", "1", "--min_accuracy", "0.99",
         "--overwrite_output_dir", "true"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: quality gate: held-out accuracy") and "below min_accuracy 0.9900" in error
    assert "force_push: true" in error and str(candidate) in error
    assert (output_dir / "model.safetensors").read_bytes() == before
    assert (candidate / "model.safetensors").is_file() and (candidate / "eval_results.json").is_file()
    shutil.rmtree(candidate)


def test_push_offline_is_one_line_and_keeps_local_model(trained) -> None:
    output_dir, recipe, _ = trained
    result = subprocess.run(
        [sys.executable, "pipeline/train.py", "--config", str(recipe), "--max_steps", "1", "--force_push", "true",
         "--push_to_hub", "true", "--hub_model_id", "someone/rm", "--overwrite_output_dir", "true"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot push to someone/rm: offline mode is on")
    assert "Traceback" not in result.stderr
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()
    assert "someone/rm" in (output_dir / "README.md").read_text()


def test_unknown_key_is_a_one_line_error(trained) -> None:
    _, recipe, _ = trained
    direct = subprocess.run(
        [sys.executable, "pipeline/train.py", "--config", str(recipe), "--learning_rte", "1"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert direct.returncode == 2
    assert direct.stderr.strip().splitlines() == [
        "error: command line: unknown flag --learning_rte (did you mean --learning_rate?)"
    ]
    # Under `accelerate launch` the same line comes first; accelerate's launcher then adds its own traceback.
    launched = launch("--config", str(recipe), "--learning_rte", "1")
    assert launched.returncode != 0
    assert launched.stderr.startswith("error: command line: unknown flag --learning_rte")


def test_bad_dataset_exits_2_and_keeps_previous_model(trained, tmp_path: Path) -> None:
    output_dir, recipe, _ = trained
    before = sorted(p.name for p in output_dir.iterdir())
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,answer,rank\nhello,world,best\n")
    result = subprocess.run(
        [sys.executable, "pipeline/train.py", "--config", str(recipe), "--dataset_path", str(bad),
         "--overwrite_output_dir", "true"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert f"error: {bad}: row 2: rank 'best' is not a positive number" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in output_dir.iterdir()) == before


def test_unwritable_output_dir_fails_before_training(tiny_model_dir: Path, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocked = tmp_path / "file"
        blocked.write_text("not a directory")
        target = blocked / "reward_model"  # parent is a file: not writable even for root
    else:
        blocked = tmp_path / "ro"
        blocked.mkdir()
        blocked.chmod(0o500)
        target = blocked / "reward_model"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, target)
    result = subprocess.run(
        [sys.executable, "pipeline/train.py", "--config", str(recipe)],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "error: output_dir" in result.stderr and "Traceback" not in result.stderr
    assert "train" not in result.stdout.lower()
    shutil.rmtree(tmp_path, ignore_errors=True)
