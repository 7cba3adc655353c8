"""Every shipped recipe parses; overrides win; unknown keys are one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import REPO

from pipeline.core.errors import UserError
from pipeline.core.precision import native_bf16
from pipeline.recipe.parser import parse_recipe

RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def is_training_recipe(path: Path) -> bool:
    return "accelerate" not in path.parts


@pytest.mark.parametrize("recipe", [r for r in RECIPES if is_training_recipe(r)], ids=lambda p: p.name)
def test_every_recipe_parses(recipe: Path) -> None:
    script_args, training_args, model_args = parse_recipe(["--config", str(recipe)])
    assert model_args.model_name_or_path
    assert Path(script_args.dataset_path).suffix in {".csv", ".tsv", ".jsonl", ".json", ".parquet"}
    assert training_args.max_length <= 512
    # bf16 only where the hardware runs it natively: the same recipe runs on any CPU and GPU.
    assert training_args.bf16 == native_bf16()[0]
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
    with pytest.raises(UserError) as info:
        parse_recipe(["--config", str(recipe)])
    assert str(info.value) == f"recipe {recipe}: unknown key 'learning_rte' (did you mean 'learning_rate'?)"


def test_unknown_flag_is_blamed_on_the_command_line_not_the_recipe() -> None:
    with pytest.raises(UserError) as info:
        parse_recipe(["--config", str(REPO / "recipes/quickstart.yaml"), "--learning_rte", "0.1"])
    assert str(info.value) == "command line: unknown flag --learning_rte (did you mean --learning_rate?)"


def test_flags_are_never_abbreviated() -> None:
    with pytest.raises(UserError, match="unknown flag --num_train_epoch "):
        parse_recipe(["--config", str(REPO / "recipes/quickstart.yaml"), "--num_train_epoch", "2"])


def test_hyphenated_flags_and_equals_values_still_work() -> None:
    recipe = parse_recipe(
        ["--config=" + str(REPO / "recipes/quickstart.yaml"), "--num-train-epochs", "2", "--max_length=128"]
    )
    assert recipe.training.num_train_epochs == 2 and recipe.training.max_length == 128


def test_recipe_values_are_converted_like_command_line_values(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: x\nlearning_rate: '3e-5'\nmax_length: 256.0\nuse_margin: 'yes'\n")
    script_args, training_args, _ = parse_recipe(["--config", str(recipe)])
    assert training_args.learning_rate == 3e-5 and training_args.max_length == 256 and script_args.use_margin is True


def test_recipe_env_sets_environment_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("Q2_TEST_RECIPE_ENV", raising=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: x\nenv:\n  Q2_TEST_RECIPE_ENV: 1\n")
    parse_recipe(["--config", str(recipe)])
    assert os.environ["Q2_TEST_RECIPE_ENV"] == "1"


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


@pytest.mark.parametrize("where", ["recipe", "command line"])
def test_bf16_auto_picks_native_bf16_and_other_values_name_the_choices(where: str, tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    auto = "bf16: auto\n" if where == "recipe" else ""
    recipe.write_text(f"model_name_or_path: x\ndataset_path: data/answers.csv\n{auto}")
    flags = ["--bf16", "auto"] if where == "command line" else []
    training = parse_recipe(["--config", str(recipe), *flags]).training
    native, _ = native_bf16()
    assert training.bf16 == native
    assert training.use_cpu == (native and not torch.accelerator.is_available())  # transformers' condition for CPU bf16
    assert parse_recipe(["--config", str(recipe), "--bf16", "false"]).training.bf16 is False
    with pytest.raises(UserError, match=r"--bf16 expects true, false or auto \(got 'maybe'\)"):
        parse_recipe(["--config", str(recipe), "--bf16", "maybe"])
