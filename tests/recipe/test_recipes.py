"""Every shipped recipe parses; overrides win; unknown keys are one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import REPO

from pipeline.core.errors import UserError
from pipeline.recipe.config import parse_recipe

RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def is_training_recipe(path: Path) -> bool:
    return "accelerate" not in path.parts


@pytest.mark.parametrize("recipe", [r for r in RECIPES if is_training_recipe(r)], ids=lambda p: p.name)
def test_every_recipe_parses(recipe: Path) -> None:
    script_args, training_args, model_args = parse_recipe(["--config", str(recipe)])
    assert model_args.model_name_or_path
    assert Path(script_args.dataset_path).suffix in {".csv", ".tsv", ".jsonl", ".json", ".parquet"}
    assert training_args.max_length <= 512
    # bf16 only where the device supports it: the same recipe runs on CPU and GPU.
    assert training_args.bf16 == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert training_args.activation_checkpointing is False


def test_quickstart_uses_embedded_model_and_defaults() -> None:
    script_args, training_args, model_args = parse_recipe(["--config", str(REPO / "recipes/quickstart.yaml")])
    assert model_args.model_name_or_path == "embedded:all-MiniLM-L6-v2"
    assert training_args.output_dir == "reward_model"
    assert script_args.dataset_path == "data/answers.csv"


def test_cli_overrides_win() -> None:
    script_args, training_args, _ = parse_recipe(
        ["--config", str(REPO / "recipes/quickstart.yaml"), "--dataset_path", "x.csv", "--output_dir", "out",
         "--learning_rate", "1e-3"]
    )  # fmt: skip
    assert script_args.dataset_path == "x.csv"
    assert training_args.output_dir == "out" and training_args.learning_rate == 1e-3


def test_unknown_recipe_key_is_a_one_line_error(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: x\nlearning_rte: 0.1\n")
    with pytest.raises(UserError, match="learning_rte") as info:
        parse_recipe(["--config", str(recipe)])
    assert str(recipe) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["--max_length", "1024"], "max_length must be between 8 and 512"),
        (["--test_size", "1.5"], "test_size must be between 0 and 1"),
        (["--truncation_side", "middle"], "truncation_side"),
        (["--push_to_hub", "true"], "hub_model_id is not set"),
    ],
)
def test_bad_values_are_user_errors(override: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_recipe(["--config", str(REPO / "recipes/quickstart.yaml"), *override])


def test_missing_recipe_file() -> None:
    with pytest.raises(UserError, match="cannot read recipe nope.yaml"):
        parse_recipe(["--config", "nope.yaml"])
