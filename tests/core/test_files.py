"""Atomic outputs: a directory is the whole previous one or the whole new one, whatever happens while writing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import REPO

from pipeline.core import files as atomic
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_dir, check_output_file, check_replaceable, recover


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
    own = (*OWN, "model*.safetensors")
    assert check_replaceable(ours, own, "output_dir") is True  # the caller asks for overwrite_output_dir
    # reward_model/ as the repository ships it (its .gitignore is there whether or not a model was trained since:
    # training keeps it), and the README placeholder of older checkouts.
    shipped = tmp_path / "reward_model"
    shipped.mkdir()
    (shipped / ".gitignore").write_bytes((REPO / "reward_model" / ".gitignore").read_bytes())
    assert check_replaceable(shipped, OWN, "output_dir") is False
    (shipped / ".gitignore").unlink()
    (shipped / "README.md").write_text("# reward_model/\n\nTraining replaces this\nfolder with the trained model.\n")
    assert check_replaceable(shipped, OWN, "output_dir") is False


@pytest.mark.parametrize(
    "content",
    [
        ["notes.txt"],
        ["config.json"],  # not all of the marks: not ours
        ["README.md"],  # a README that is not the placeholder
        [".gitignore"],  # a .gitignore of the user's (not the placeholder's two rules)
        ["config.json", "eval_results.json", "model.safetensors", "notes.txt"],  # an earlier output plus a user file
    ],
)
def test_a_folder_with_files_not_written_here_is_refused(tmp_path: Path, content: list[str]) -> None:
    target = tmp_path / "project"
    target.mkdir()
    for name in content:
        (target / name).write_text("someone's work")
    own = (*OWN, "model*.safetensors")
    with pytest.raises(UserError, match=r"already holds files this program did not write \(.*\); it is replaced"):
        check_replaceable(target, own, "output_dir")
    assert sorted(p.name for p in target.iterdir()) == sorted(content)


def test_the_refusal_names_the_users_files_not_ours(tmp_path: Path) -> None:
    target = tmp_path / "reward_model"
    target.mkdir()
    for name in (*OWN, "model.safetensors", "evaluation", "thesis.tex"):
        (target / name).write_text("x")
    with pytest.raises(UserError, match=r"did not write \(thesis\.tex\)"):
        check_replaceable(target, (*OWN, "model.safetensors", "evaluation"), "output_dir")


def test_the_marks_default_to_every_plain_name(tmp_path: Path) -> None:
    target = tmp_path / "processed"
    target.mkdir()
    own = ("dataset_dict.json", "data_report.json", "train", "test")
    for name in own[:3]:
        (target / name).write_text("x")
    with pytest.raises(UserError, match="did not write"):  # no test split: not an output of ours
        check_replaceable(target, own, "--output_dir")
    (target / "test").mkdir()
    assert check_replaceable(target, own, "--output_dir") is True
    assert check_replaceable(target, (*own, "other"), "--output_dir", marks=own) is True


def test_atomic_dir_keeps_the_named_files_of_the_previous_directory(previous: Path) -> None:
    (previous / ".gitignore").write_text("*\n!.gitignore\n")
    with atomic_dir(previous, keep=(".gitignore", "absent.txt")) as staging:
        assert (staging / ".gitignore").read_text() == "*\n!.gitignore\n"
        write_model(staging, "v2")
    assert contents(previous) == {
        ".gitignore": "*\n!.gitignore\n",
        "config.json": "v2",
        "model.safetensors": "v2" * 1000,
    }
    assert siblings(previous) == []


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_training_into_the_shipped_placeholder_leaves_git_status_clean(tmp_path: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    (tmp_path / "reward_model").mkdir()
    shutil.copy(REPO / ".gitignore", tmp_path / ".gitignore")
    shutil.copy(REPO / "reward_model" / ".gitignore", tmp_path / "reward_model" / ".gitignore")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "clone"]):
        subprocess.run([*git, *args], cwd=tmp_path, check=True, capture_output=True)
    target = tmp_path / "reward_model"
    assert check_replaceable(target, OWN, "output_dir") is False
    with atomic_dir(target, keep=(".gitignore",)) as staging:  # as save_model_dir does
        write_model(staging, "v1")
        (staging / "README.md").write_text("model card")
    status = subprocess.run([*git, "status", "--porcelain", "--untracked-files=all"], cwd=tmp_path, capture_output=True)
    assert status.stdout.decode() == ""
    assert (target / "config.json").read_text() == "v1"


# -- output files -------------------------------------------------------------------------------------------------


def test_an_output_file_may_be_new_or_an_existing_file(tmp_path: Path) -> None:
    check_output_file(tmp_path / "new" / "deeper" / "out.csv", "--output")
    (tmp_path / "old.csv").write_text("x")
    check_output_file(tmp_path / "old.csv", "--output", inputs=(str(tmp_path / "in.csv"), None))


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("directory", r"^--output .*/out\.csv is a directory; give the path of a file to write"),
        ("under a file", r"^--output .*/file\.txt/out\.csv: .*/file\.txt is a file, not a folder; choose another"),
        ("deep under a file", r"^--output .*/file\.txt/a/b/out\.csv: .*/file\.txt is a file, not a folder"),
        ("the input", r"^--output .*/in\.csv is the input file .*in\.csv; refusing to overwrite it"),
        ("the input by a symlink", r"^--output .*/link\.csv is the input file .*; refusing to overwrite it"),
        ("a device", r"^--output /dev/null exists and is not a regular file; choose another name$"),
    ],
)
def test_output_files_that_cannot_be_written_are_refused(tmp_path: Path, case: str, match: str) -> None:
    source = tmp_path / "in.csv"
    source.write_text("prompt,response\n")
    (tmp_path / "file.txt").write_text("notes")
    target = {
        "directory": tmp_path / "out.csv",
        "under a file": tmp_path / "file.txt" / "out.csv",
        "deep under a file": tmp_path / "file.txt" / "a" / "b" / "out.csv",
        "the input": tmp_path / "sub" / ".." / "in.csv",
        "the input by a symlink": tmp_path / "link.csv",
        "a device": Path("/dev/null"),
    }[case]
    if case == "directory":
        target.mkdir()
    if case == "the input by a symlink":
        target.symlink_to(source)
        (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match=match):
        check_output_file(target, "--output", inputs=(str(source),))
    assert source.read_text() == "prompt,response\n" and (tmp_path / "file.txt").read_text() == "notes"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_output_in_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match=r"cannot write in .*locked \(permission denied\)"):
            check_output_file(locked / "out.csv", "--output")
        with pytest.raises(UserError, match=r"cannot write in .*locked \(permission denied\)"):
            check_replaceable(locked / "model", OWN, "output_dir")
    finally:
        locked.chmod(0o700)


def test_a_planted_symlink_at_a_staging_name_is_never_followed(tmp_path: Path, monkeypatch) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    names = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: next(names))
    target = tmp_path / "out.csv"
    planted = tmp_path / f".out.csv.tmp-{os.getpid()}-aaaaaaaa"
    planted.symlink_to(victim)
    with atomic.atomic_file(target) as staging:
        assert staging.name.endswith("bbbbbbbb")  # the planted name is skipped, not opened
        staging.write_text("scores")
    assert victim.read_text() == "precious" and target.read_text() == "scores" and planted.is_symlink()


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


def test_a_second_run_on_the_same_output_stops_at_once_and_a_finished_one_leaves_it_free(tmp_path: Path) -> None:
    from pipeline.core.files import exclusive_output

    target = tmp_path / "reward_model"
    with exclusive_output(target, "output_dir"):
        with pytest.raises(UserError, match=r"output_dir .*reward_model is in use by another run \(lock .*\.lock\)"):
            with exclusive_output(target, "output_dir"):
                pass
    with exclusive_output(target, "output_dir"):  # released with the first run
        pass


def test_training_refuses_an_output_dir_another_run_holds(tiny_model_dir: Path, tmp_path: Path, capsys) -> None:
    from helpers import write_recipe

    from pipeline.cli import train
    from pipeline.core.files import exclusive_output

    recipe = write_recipe(tmp_path / "r.yaml", tiny_model_dir, tmp_path / "reward_model")
    with exclusive_output((tmp_path / "reward_model").resolve(), "output_dir"):
        with pytest.raises(SystemExit) as exit_info:
            train.main(["--config", str(recipe)])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: output_dir ") and "is in use by another run" in line
    assert not (tmp_path / "reward_model").exists()
