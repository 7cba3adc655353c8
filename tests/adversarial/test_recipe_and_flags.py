"""The front door, tried as a new user would: misspelt, abbreviated and wrongly typed keys and flags, bad values,
`--help`, mistyped model folders, a hub_token, Ctrl-C.

Every bad input ends before any work in ONE line that names the recipe file or the command line (exit code 2, no
traceback, nothing written). One training run (interrupted with SIGINT) checks Ctrl-C and that the token never
reaches the disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import REPO, write_recipe

from pipeline.cli.train import main as train_main
from pipeline.cli.train import push_phase
from pipeline.core import hub
from pipeline.core.errors import UserError
from pipeline.data.cli import main as data_main
from pipeline.model.loading import load_reward_model
from pipeline.recipe.parser import parse_recipe

QUICKSTART = str(REPO / "recipes/quickstart.yaml")
NUMBER_OF_STEPS = "a number of steps >= 1, or -1 to train num_train_epochs"


def fails(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a CLI's main in-process; it must exit 2 with one `error:` line, no traceback and nothing on stdout."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2, err
    assert "Traceback" not in err and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# Command-line flags over the quickstart recipe: the command line is blamed, never the recipe
# ---------------------------------------------------------------------------------------------------------------

FLAG_CASES = [
    (["--learnig_rate", "1e-3"], "unknown flag --learnig_rate (did you mean --learning_rate?)"),
    (["--num_train_epoch", "2"], "unknown flag --num_train_epoch (did you mean --num_train_epochs?)"),
    (["--num_train_epoch=2"], "unknown flag --num_train_epoch (did you mean --num_train_epochs?)"),
    (["--max_length", "1.5"], "--max_length expects an integer (got '1.5')"),
    (["--learning_rate", "abc"], "--learning_rate expects a number (got 'abc')"),
    (["--max_length"], "--max_length needs a value"),
    (["--use_margin", "maybe"], "--use_margin expects true or false (got 'maybe')"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be an integer >= 1 (got 0)"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be an integer >= 1 (got 0)"),
    (["--eval_batch_size", "0"], "--eval_batch_size must be an integer >= 1 (got 0)"),
    (["--reward_stats_max_answers", "0"], "--reward_stats_max_answers must be an integer >= 1 (got 0)"),
    (["--learning_rate", "-1"], "--learning_rate must be a number > 0 (got -1.0)"),
    (["--learning_rate", "nan"], "--learning_rate must be a number > 0 (got nan)"),
    (["--num_train_epochs", "0"], "--num_train_epochs must be a number > 0 (or set max_steps) (got 0.0)"),
    (["--max_steps", "0"], f"--max_steps must be {NUMBER_OF_STEPS} (got 0)"),
    (["--warmup_steps", "-1"], "--warmup_steps must be a number >= 0 (got -1.0)"),
    (["--weight_decay", "-0.5"], "--weight_decay must be a number >= 0 (got -0.5)"),
    (["--save_steps", "0"], "--save_steps must be a number > 0 (got 0.0)"),
    (["--logging_steps", "0"], "--logging_steps must be a number > 0 (got 0.0)"),
    (["--max_length", "1024"], "--max_length must be between 8 and 512 (got 1024)"),
    (["--min_accuracy", "1.5"], "--min_accuracy must be between 0 and 1 (got 1.5)"),
    (["--test_size", "0"], "--test_size must be between 0 and 1 (exclusive) (got 0.0)"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295 (got -1)"),
    (["--objective", "listwise"], "--objective must be 'pairwise' or 'ranking' (got 'listwise')"),
    (["--dataset_path", ""], "--dataset_path must be a non-blank path or name, e.g. data/answers.csv (got '')"),
    (
        ["--eval_strategy", "steps"],
        "--eval_strategy must be 'no' (the held-out evaluation runs after training) (got 'steps')",
    ),
    (
        ["--report_to", "wandb"],
        "--report_to must be 'none' or installed integrations (wandb not installed) (got 'wandb')",
    ),
    (["--fsdp", "full_shard"], "--fsdp needs several processes (accelerate launch --num_processes N)"),
    (["--output_dir", " "], "--output_dir must be a non-blank path or name, e.g. reward_model (got ' ')"),
]


@pytest.mark.parametrize(("override", "message"), FLAG_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_a_bad_flag_is_one_line_naming_the_command_line(
    override: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    line = fails(train_main, ["--config", QUICKSTART, "--output_dir", str(out), *override], capsys)
    assert line == f"error: command line: {message}"
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_choice_flag_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    line = fails(train_main, ["--config", QUICKSTART, "--lr_scheduler_type", "fast"], capsys)
    assert line.startswith("error: command line: --lr_scheduler_type expects one of linear, cosine")
    assert line.endswith("(got 'fast')")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["recipes/quickstart.yaml"], "error: command line: unexpected argument 'recipes/quickstart.yaml' (did you "
         "mean --config recipes/quickstart.yaml?); flags are --KEY VALUE"),
        (["--config"], "error: command line: --config needs a recipe path, e.g. --config recipes/quickstart.yaml"),
        (["--config", QUICKSTART, "--config", QUICKSTART], "error: command line: --config is given more than once; "
         "give one recipe"),
        (["--config", "no_such.yaml"], "error: cannot read recipe no_such.yaml: No such file or directory"),
        (["--config", QUICKSTART, "--push_to_hub", "true"], f"error: recipe {QUICKSTART}: hub_model_id is not set "
         "but push_to_hub is true; set it, e.g. your-name/reward-model"),
    ],
    ids=["recipe without --config", "--config without path", "two recipes", "missing recipe", "push without id"],
)  # fmt: skip
def test_recipe_argument_mistakes(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert fails(train_main, argv, capsys) == message


# ---------------------------------------------------------------------------------------------------------------
# Mistakes inside the recipe file: the recipe is blamed, by path and key
# ---------------------------------------------------------------------------------------------------------------

RECIPE_CASES = [
    ("learnig_rate: 0.001", "unknown key 'learnig_rate' (did you mean 'learning_rate'?)"),
    ("dataset_path:", "dataset_path is blank; give it a value (default: data/answers.csv)"),
    ("max_length: 1.5", "max_length expects an integer (got 1.5)"),
    ("max_length: true", "max_length expects an integer (got True)"),
    ("learning_rate: abc", "learning_rate expects a number (got 'abc')"),
    ("use_margin: maybe", "use_margin expects true or false (got 'maybe')"),
    ("per_device_train_batch_size: 0", "per_device_train_batch_size must be an integer >= 1 (got 0)"),
    ("num_train_epochs: 0", "num_train_epochs must be a number > 0 (or set max_steps) (got 0.0)"),
    ("save_strategy: sometimes", "save_strategy must be 'no', 'steps' or 'epoch' (got 'sometimes')"),
    (
        "use_peft: true",
        "use_peft is not used by this pipeline (of trl.ModelConfig only model_name_or_path is); remove it (got True)",
    ),
]


@pytest.mark.parametrize(("line", "message"), RECIPE_CASES, ids=[case[0] for case in RECIPE_CASES])
def test_a_bad_recipe_key_is_one_line_naming_the_recipe(
    line: str, message: str, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, tmp_path / "out")
    key = line.split(":")[0]
    kept = [row for row in recipe.read_text().splitlines() if not row.startswith(f"{key}:")]
    recipe.write_text("\n".join([*kept, line]) + "\n")
    assert fails(train_main, ["--config", str(recipe)], capsys) == f"error: recipe {recipe}: {message}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: [1e-3\n", "is not valid YAML: "),
        ("- a list\n- of keys\n", "must be a YAML mapping of keys (lines of `key: value`)"),
        ("", "must be a YAML mapping of keys (lines of `key: value`)"),
        (b"learning_rate: 1e-3 \xff\n", "is not UTF-8 text"),
    ],
    ids=["broken YAML", "a list", "empty", "not UTF-8"],
)
def test_a_recipe_that_is_not_a_mapping(text, message: str, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert fails(train_main, ["--config", str(recipe)], capsys).startswith(f"error: recipe {recipe} {message}")


def test_the_command_line_overrides_a_bad_recipe_value(tmp_path: Path, tiny_model_dir: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, tmp_path / "out", learning_rate=-1)
    with pytest.raises(UserError, match=f"recipe {recipe}: learning_rate must be a number > 0"):
        parse_recipe(["--config", str(recipe)])
    assert parse_recipe(["--config", str(recipe), "--learning_rate", "0.01"]).training.learning_rate == 0.01
    # max_steps > 0 trains that many steps: zero epochs are then allowed.
    assert parse_recipe(["--config", str(recipe), "--learning_rate", "1", "--max_steps", "2", "--num_train_epochs",
                         "0"]).training.max_steps == 2  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# --help: a screen or two, --config and the pipeline's keys first; --help-all has every key
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("main", "argv", "present", "absent", "most_lines"),
    [
        (train_main, ["--help"], ["--config RECIPE.yaml", "--dataset_path", "--learning_rate", "--help-all"],
         ["--adam_beta1"], 120),
        (train_main, ["--config", QUICKSTART, "-h"], ["--config RECIPE.yaml", "--min_accuracy"], ["--adam_beta1"], 120),
        (data_main, ["--help"], ["python -m pipeline.data", "--output_dir DIR", "--dataset_path", "--help-all"],
         ["--learning_rate"], 70),
        (train_main, ["--help-all"], ["--config RECIPE.yaml", "--adam_beta1", "--dataset_path"], [], 10_000),
    ],
    ids=["train --help", "train -h with a recipe", "data --help", "train --help-all"],
)  # fmt: skip
def test_help(main, argv, present, absent, most_lines: int, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 0 and err == ""
    assert len(out.splitlines()) <= most_lines
    assert all(word in out for word in present), [w for w in present if w not in out]
    assert not any(word in out for word in absent)


# ---------------------------------------------------------------------------------------------------------------
# A model argument that is no folder: one line naming the folder, at once (offline: no network at all)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ending"),
    [
        ("my_modle", "and cannot be downloaded: the Hugging Face Hub is unreachable (offline)"),
        ("models/my_modle", "and cannot be downloaded: the Hugging Face Hub is unreachable (offline)"),
        ("./my_modle", "and is not a valid Hugging Face Hub id either"),
    ],
)
def test_a_mistyped_model_folder_is_named_at_once(
    name: str, ending: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        load_reward_model(name)
    assert time.monotonic() - start < 5
    missing = (tmp_path / name).absolute()
    assert str(info.value) == f"model '{name}' is not a local folder ({missing} does not exist) {ending}"


def test_a_file_given_as_model_folder(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(UserError, match=r"is a file, not a model folder \(one written by save_pretrained\(\)\)$"):
        load_reward_model(str(weights))


def test_score_and_evaluation_name_the_missing_model_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    from pipeline.evaluation.cli import main as evaluation_main
    from pipeline.score.cli import main as score_main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("prompt,answer,rank\nhi,hello,1\nhi,bye,2\n")
    missing = f"model 'my_modle' is not a local folder ({tmp_path / 'my_modle'} does not exist)"
    score = fails(score_main, ["--model", "my_modle", "--input", "in.csv", "--output", "out.csv"], capsys)
    evaluation = fails(evaluation_main, ["--model", "my_modle", "--data", "in.csv"], capsys)
    assert missing in score and missing in evaluation
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_training_names_the_missing_base_model_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = write_recipe(tmp_path / "r.yaml", tmp_path / "my_modle", tmp_path / "out")
    line = fails(train_main, ["--config", str(recipe)], capsys)
    assert line.startswith(f"error: base model '{tmp_path / 'my_modle'}' is not a local folder")
    assert "quickstart.yaml" in line and not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# hub_token: used for the pushes, never written; Ctrl-C: one line, exit 130, checkpoints kept
# ---------------------------------------------------------------------------------------------------------------


def test_hub_token_is_used_for_the_pushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens: list[str | None] = []

    class RecordingApi:
        def __init__(self, token: str | None = None) -> None:
            tokens.append(token)

        def create_repo(self, *args, **kwargs) -> None:
            pass

        def upload_folder(self, **kwargs) -> str:
            return "https://huggingface.co/me/rm/commit/1"

    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    recipe = parse_recipe(["--config", QUICKSTART, "--push_to_hub", "true", "--hub_model_id", "me/rm",
                           "--hub_token", "secret123"])  # fmt: skip
    push_phase(recipe, SimpleNamespace(output_dir=tmp_path), SimpleNamespace(dataset_repo=None))
    assert tokens == ["secret123"]


def test_ctrl_c_keeps_checkpoints_and_no_file_holds_the_hub_token(tmp_path: Path, tiny_model_dir: Path) -> None:
    output_dir = tmp_path / "reward_model"
    checkpoints = tmp_path / ".reward_model.checkpoints"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, output_dir, num_train_epochs=200, save_steps=1,
                          save_total_limit=3, per_device_train_batch_size=64)  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "pipeline/train.py", "--config", str(recipe), "--hub_token", "secret123"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("checkpoint-*/q2_checkpoint_complete")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert list(checkpoints.glob("checkpoint-*/training_args.bin")) and not output_dir.exists()
    assert json.loads((checkpoints / "run.json").read_text())["recipe"]
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert not [path for path in written if b"secret123" in path.read_bytes()]
    assert "secret123" not in stdout + stderr
