"""The commands users type: `q2-reward data|train|evaluate|score|serve` dispatches to each step's main (the same as
`python -m pipeline.X`), and `pipeline/train.py` is the thin script that `accelerate launch` runs."""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ACCELERATE, INTERRUPTED_EXIT, REPO, run_module

from pipeline.cli import COMMANDS, main

USAGE = {
    "data": "python -m pipeline.data",
    "train": "accelerate launch pipeline/train.py",
    "evaluate": "python -m pipeline.evaluation",
    "score": "python -m pipeline.score",
    "serve": "python -m pipeline.serve",
}


def exits(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.mark.parametrize("argv", [["--help"], ["-h"], []], ids=["--help", "-h", "nothing"])
def test_help_lists_every_command_and_how_to_train_on_several_processes(argv, capsys) -> None:
    main(argv)
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("usage: q2-reward COMMAND")
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  ") and "  " in line.strip()][1:6] == [
        "data", "train", "evaluate", "score", "serve"
    ]  # fmt: skip
    assert "accelerate launch pipeline/train.py" in out and "accelerate launch -m pipeline.cli train" in out
    assert max(map(len, out.splitlines())) <= 100


def test_the_commands_are_the_steps_mains() -> None:
    assert list(COMMANDS) == list(USAGE)
    for command in COMMANDS.values():
        assert callable(importlib.import_module(command.module).main)


@pytest.mark.parametrize("name", list(USAGE))
def test_each_command_help_is_the_steps_own(name: str, capsys) -> None:
    code, out, err = exits([name, "--help"], capsys)
    assert code == 0 and err == ""
    assert USAGE[name] in out.splitlines()[0]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["trian"], "error: unknown command 'trian' (did you mean train?); commands: data, train, evaluate, score, "
                    "serve (see q2-reward --help)"),
        (["zzz", "--help"], "error: unknown command 'zzz'; commands: data, train, evaluate, score, serve "
                            "(see q2-reward --help)"),
        (["--config", "recipes/quickstart.yaml"], "error: --config: the command comes first, e.g. q2-reward train "
         "--config ...; commands: data, train, evaluate, score, serve (see q2-reward --help)"),
    ],
    ids=["typo", "unknown", "flag first"],
)  # fmt: skip
def test_an_unknown_command_is_one_line_and_exit_2(argv: list[str], line: str, capsys) -> None:
    code, out, err = exits(argv, capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [line]


def test_a_commands_own_errors_pass_through(capsys) -> None:
    code, _, err = exits(["score", "--model", "m", "--input", "in.csv"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        "error: the following arguments are required: --output (see python -m pipeline.score --help)"
    ]


def test_version(capsys) -> None:
    main(["--version"])
    assert capsys.readouterr().out.strip() == "q2-reward 0.1.0"


@pytest.mark.skipif(shutil.which("q2-reward") is None, reason="the console script: pip install -e .")
def test_the_console_script() -> None:
    shown = subprocess.run(["q2-reward", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "serve" in shown.stdout
    typo = subprocess.run(["q2-reward", "scroe", "--help"], capture_output=True, text=True)
    assert typo.returncode == 2 and "(did you mean score?)" in typo.stderr


def test_python_m_pipeline_cli_and_python_m_each_step() -> None:
    dispatched = run_module("pipeline.cli", "evaluate", "--help")
    direct = run_module("pipeline.evaluation", "--help")
    assert dispatched.returncode == direct.returncode == 0
    assert dispatched.stdout == direct.stdout


def test_accelerate_launch_m_pipeline_cli_train() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    shown = subprocess.run([*ACCELERATE, "-m", "pipeline.cli", "train", "--help"], cwd=REPO, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert shown.stdout.startswith("usage: accelerate launch pipeline/train.py --config RECIPE.yaml")


# ---------------------------------------------------------------------------------------------------------------
# pipeline/train.py: a few lines, the package's train command
# ---------------------------------------------------------------------------------------------------------------


def test_train_py_is_a_thin_entry() -> None:
    text = (REPO / "pipeline/train.py").read_text()
    assert len(text.splitlines()) <= 20
    assert "sys.path" not in text and "noqa" not in text


def test_train_py_without_the_package_installed_is_one_line(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # -S: no site-packages, so no editable install either; what a clone without `pip install -e .` sees.
    shown = subprocess.run([sys.executable, "-S", str(REPO / "pipeline/train.py"), "--help"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)  # fmt: skip
    assert shown.returncode == 2
    assert shown.stderr.strip().splitlines() == [
        "error: the pipeline package is not installed; run `pip install -e .` in the repository"
    ]


@pytest.mark.parametrize(
    "launcher", [("pipeline/train.py",), ("-m", "pipeline.cli", "train")], ids=["train.py", "q2-reward train"]
)
def test_ctrl_c_while_loading_is_the_resume_line_and_exit_130(launcher: tuple[str, ...], tmp_path: Path) -> None:
    # -X importtime reports each module as it finishes: once pipeline.cli is in, torch and transformers load next.
    process = subprocess.Popen(
        [sys.executable, "-X", "importtime", *launcher, "--config", "recipes/quickstart.yaml",
         "--output_dir", str(tmp_path / "out")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    for line in process.stderr:
        if line.rstrip().endswith("| pipeline.cli"):
            break
    time.sleep(0.3)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    lines = [line for line in stderr.splitlines() if not line.startswith("import time:")]
    assert process.returncode in INTERRUPTED_EXIT, stderr[-3000:]
    assert lines == ["", "interrupted; rerun the same command to resume"]
    assert not (tmp_path / "out").exists()
