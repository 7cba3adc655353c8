"""Atomic outputs: a directory is the whole previous one or the whole new one, whatever happens while writing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO

from pipeline.core import files as atomic
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_dir, check_replaceable, recover


def write_model(path: Path, version: str) -> None:
    (path / "config.json").write_text(version)
    (path / "model.safetensors").write_text(version * 1000)


def contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


@pytest.fixture
def previous(tmp_path: Path) -> Path:
    target = tmp_path / "reward_model"
    with atomic_dir(target) as staging:
        write_model(staging, "v1")
    return target


def test_success_replaces_the_whole_directory_and_leaves_nothing_beside_it(previous: Path) -> None:
    with atomic_dir(previous) as staging:
        (staging / "config.json").write_text("v2")
    assert contents(previous) == {"config.json": "v2"}  # no file of v1 survives in v2
    assert siblings(previous) == []


def test_error_while_writing_keeps_the_previous_directory(previous: Path) -> None:
    with pytest.raises(RuntimeError), atomic_dir(previous) as staging:
        (staging / "config.json").write_text("v2")
        raise RuntimeError("disk full")
    assert contents(previous) == {"config.json": "v1", "model.safetensors": "v1" * 1000}
    assert siblings(previous) == []


def test_sigkill_while_writing_keeps_the_previous_directory_and_the_next_run_cleans_up(previous: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, signal
        from pipeline.core.files import atomic_dir
        with atomic_dir({str(previous)!r}) as staging:
            (staging / "config.json").write_text("v2")
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert killed.returncode == -9
    assert contents(previous)["config.json"] == "v1"
    assert len(siblings(previous)) == 1  # the dead process's staging directory
    with atomic_dir(previous) as staging:
        write_model(staging, "v3")
    assert contents(previous)["config.json"] == "v3"
    assert siblings(previous) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux-only")
def test_replacement_is_one_atomic_exchange_on_linux(previous: Path, monkeypatch) -> None:
    renames: list[tuple[str, str]] = []
    real_rename = Path.rename
    monkeypatch.setattr(
        Path, "rename", lambda self, to: renames.append((self.name, Path(to).name)) or real_rename(self, to)
    )
    with atomic_dir(previous) as staging:
        write_model(staging, "v2")
    assert renames == []  # no instant at which reward_model/ is missing or half-moved
    assert contents(previous)["config.json"] == "v2"
    assert siblings(previous) == []


def test_crash_between_the_two_fallback_renames_restores_the_previous_directory(previous: Path, monkeypatch) -> None:
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # a filesystem without renameat2
    real_rename = Path.rename

    def crash_on_second_rename(self: Path, to):
        if self.name.startswith(".reward_model.tmp-"):
            raise KeyboardInterrupt  # the process dies after moving the previous model aside
        return real_rename(self, to)

    monkeypatch.setattr(Path, "rename", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt), atomic_dir(previous) as staging:
        write_model(staging, "v2")
    assert not previous.exists()
    monkeypatch.setattr(Path, "rename", real_rename)
    monkeypatch.setattr(atomic, "_alive", lambda pid: False)  # as after the process is gone
    recover(previous)
    assert contents(previous)["config.json"] == "v1"
    assert siblings(previous) == []


def test_fallback_renames_replace_the_directory(previous: Path, monkeypatch) -> None:
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    with atomic_dir(previous) as staging:
        write_model(staging, "v2")
    assert contents(previous)["config.json"] == "v2"
    assert siblings(previous) == []


def test_staging_of_a_live_process_is_left_alone(previous: Path) -> None:
    busy = previous.with_name(f".{previous.name}.tmp-{os.getppid()}-abcdefgh")
    busy.mkdir()
    recover(previous)
    assert busy.is_dir()


# -- what may be replaced at all ------------------------------------------------------------------------------

OWN = ("config.json", "eval_results.json")


def test_absent_empty_own_and_placeholder_targets_may_be_replaced(tmp_path: Path) -> None:
    assert check_replaceable(tmp_path / "new", OWN, "output_dir") is False
    (tmp_path / "empty").mkdir()
    assert check_replaceable(tmp_path / "empty", OWN, "output_dir") is False
    ours = tmp_path / "ours"
    ours.mkdir()
    for name in (*OWN, "model.safetensors"):
        (ours / name).write_text("{}")
    assert check_replaceable(ours, OWN, "output_dir") is True  # the caller asks for overwrite_output_dir
    # The placeholder README the repository ships (as committed: a trained model may have replaced the folder).
    committed = subprocess.run(["git", "show", "HEAD:reward_model/README.md"], cwd=REPO, capture_output=True)
    if committed.returncode != 0:
        pytest.skip("not a git checkout")
    shipped = tmp_path / "reward_model"
    shipped.mkdir()
    (shipped / "README.md").write_bytes(committed.stdout)
    assert check_replaceable(shipped, OWN, "output_dir") is False


@pytest.mark.parametrize("content", [["notes.txt"], ["config.json"], ["README.md"]])
def test_a_folder_with_files_not_written_here_is_refused(tmp_path: Path, content: list[str]) -> None:
    target = tmp_path / "project"
    target.mkdir()
    for name in content:
        (target / name).write_text("someone's work")
    with pytest.raises(UserError, match=r"already holds files this program did not write \(.*\); it is replaced"):
        check_replaceable(target, OWN, "output_dir")


def test_current_directory_its_parents_and_folders_holding_the_input_are_refused(tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "answers.csv").write_text("prompt,answer,rank\n")
    monkeypatch.chdir(work)
    for target in (".", "..", str(work) + "/"):
        with pytest.raises(UserError, match="is the current directory or one above it"):
            check_replaceable(target, OWN, "output_dir")
    with pytest.raises(UserError, match="holds the input data/answers.csv"):
        check_replaceable("data", OWN, "output_dir", inputs=("data/answers.csv",))


def test_training_refuses_a_foreign_output_dir_before_any_work(tmp_path: Path) -> None:
    target = tmp_path / "project"
    target.mkdir()
    (target / "notes.txt").write_text("a day of notes")
    result = subprocess.run(
        [sys.executable, "pipeline/train.py", "--config", "recipes/quickstart.yaml", "--output_dir", str(target),
         "--overwrite_output_dir", "true"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: output_dir {target} already holds files this program did not write (notes.txt); it is replaced as "
        f"a whole when saving, so choose a new folder for it, e.g. {target / 'reward_model'}, or empty that one"
    ]
    assert (target / "notes.txt").read_text() == "a day of notes"
