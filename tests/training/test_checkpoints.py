"""Which checkpoint a rerun resumes from: only complete ones, only of the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core.errors import UserError
from pipeline.training.checkpoints import (
    COMPLETE,
    RUN_FILE,
    complete_checkpoints,
    delete_old_checkpoints,
    resume_point,
    run_identity,
    write_run_file,
)


def make_checkpoint(directory: Path, step: int, complete: bool = True) -> Path:
    path = directory / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    if complete:
        (path / COMPLETE).write_text(str(step))
    return path


def test_last_complete_checkpoint_of_the_same_run_is_chosen(tmp_path: Path) -> None:
    identity = run_identity({"learning_rate": 5e-5, "seed": 42, "output_dir": "a"}, "train:abc,test:def")
    write_run_file(tmp_path, identity)
    make_checkpoint(tmp_path, 4)
    make_checkpoint(tmp_path, 12)
    make_checkpoint(tmp_path, 16, complete=False)  # torn by a crash while saving
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-12"]
    assert resume_point(tmp_path, identity, None) == tmp_path / "checkpoint-12"
    # Keys that do not change the weights (output_dir, logging, saving, pushing) still resume.
    moved = run_identity(
        {"learning_rate": 5e-5, "seed": 42, "output_dir": "b", "logging_steps": 1}, "train:abc,test:def"
    )
    assert resume_point(tmp_path, moved, None) == tmp_path / "checkpoint-12"


def test_checkpoints_of_another_run_are_refused_not_deleted(tmp_path: Path) -> None:
    write_run_file(tmp_path, run_identity({"learning_rate": 5e-5}, "train:abc"))
    make_checkpoint(tmp_path, 4)
    with pytest.raises(UserError, match=r"recipe keys differ: learning_rate 5e-05 -> 0\.001"):
        resume_point(tmp_path, run_identity({"learning_rate": 1e-3}, "train:abc"), None)
    with pytest.raises(UserError, match="the input data changed"):
        resume_point(tmp_path, run_identity({"learning_rate": 5e-5}, "train:xyz"), None)
    assert (tmp_path / "checkpoint-4" / "model.safetensors").is_file()


def test_no_checkpoint_starts_fresh_and_explicit_path_wins(tmp_path: Path) -> None:
    identity = run_identity({"seed": 1}, "d")
    assert resume_point(tmp_path / "missing", identity, None) is None
    chosen = make_checkpoint(tmp_path / "elsewhere", 7)
    assert resume_point(tmp_path, identity, str(chosen)) == chosen
    with pytest.raises(UserError, match="resume_from_checkpoint .*: no such checkpoint directory"):
        resume_point(tmp_path, identity, str(tmp_path / "nope"))


def test_old_and_torn_checkpoints_are_deleted_only_after_the_new_one_is_complete(tmp_path: Path) -> None:
    for step in (4, 8):
        make_checkpoint(tmp_path, step)
    make_checkpoint(tmp_path, 10, complete=False)  # torn by an earlier crash
    make_checkpoint(tmp_path, 12)  # the one just written and marked complete
    make_checkpoint(tmp_path, 16, complete=False)  # a later torn one: a resumed run overwrites it when it gets there
    delete_old_checkpoints(tmp_path, keep=1, step=12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-12", "checkpoint-16"]
    delete_old_checkpoints(tmp_path, keep=None, step=20)  # no limit: only torn ones go
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-12"]


def test_run_file_is_replaced_whole_and_leaves_no_staging_file(tmp_path: Path) -> None:
    directory = tmp_path / ".reward_model.checkpoints"  # created on first write
    write_run_file(directory, run_identity({"seed": 1}, "d"))
    write_run_file(directory, run_identity({"seed": 2}, "d"))
    assert json.loads((directory / RUN_FILE).read_text()) == run_identity({"seed": 2}, "d")
    assert [p.name for p in directory.iterdir()] == [RUN_FILE]
