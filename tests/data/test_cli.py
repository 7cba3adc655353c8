"""The data step's command line: the saved DatasetDict with its report, one-line errors that leave no output, and the
push of the processed dataset to the Hub (faked: nothing leaves the machine)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from helpers import REPO, run_module, write_csv

from pipeline.core.errors import UserError
from pipeline.data import build_dataset, push_dataset
from pipeline.data.cli import main


def test_data_cli_writes_datasetdict_and_report(tmp_path: Path) -> None:
    out = tmp_path / "processed"
    result = run_module("pipeline.data", "--config", "recipes/quickstart.yaml", "--output_dir", str(out))
    assert result.returncode == 0, result.stderr
    from datasets import load_from_disk

    dataset = load_from_disk(str(out))
    report = json.loads((out / "data_report.json").read_text())
    assert dataset["train"].num_rows == report["splits"]["train"]["pairs"] > 0
    assert dataset["test"].num_rows == report["splits"]["test"]["pairs"] > 0
    assert "pairs" in result.stdout


def test_data_cli_bad_file_exits_2_with_one_line_and_no_output(tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "bad.csv", "prompt,answer\np,a\n")
    out = tmp_path / "processed"
    args = ["--config", "recipes/quickstart.yaml", "--dataset_path", str(bad), "--output_dir", str(out)]
    result = run_module("pipeline.data", *args)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "missing column rank" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def cli(tmp_path: Path, *args: str, capsys=None) -> tuple[int, str, str]:
    """`python -m pipeline.data --config recipes/quickstart.yaml ARGS` in-process: exit code, stdout, stderr."""
    # The recipe's dataset_path is relative to the repository: given absolute, the test runs from any directory.
    data = [] if "--dataset_path" in args else ["--dataset_path", str(REPO / "data/answers.csv")]
    try:
        main(["--config", str(REPO / "recipes/quickstart.yaml"), *data, *args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code)
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


def test_cli_saves_the_report_with_every_figure_next_to_the_dataset(
    tmp_path: Path, capsys, ranked_frame, write_format, write_bytes
) -> None:
    train = write_format(ranked_frame(columns=("q", "a", "r")), tmp_path / "train.csv")
    test = write_bytes(tmp_path / "test.tsv", b"q\ta\tr\nnew\tx\t1\nnew\ty\t2\n")
    out = tmp_path / "processed"
    args = ["--dataset_path", str(train), "--test_path", str(test), "--output_dir", str(out)]
    args += ["--prompt_column", "q", "--answer_column", "a", "--rank_column", "r"]
    code, stdout, _ = cli(tmp_path, *args, capsys=capsys)
    assert code == 0
    report = json.loads((out / "data_report.json").read_text())
    for key in ("rows_read", "rows_kept", "dropped_by_reason", "prompts", "pairs", "splits", "fingerprint"):
        assert key in report
    assert report["splits"] == {"train": {"prompts": 10, "pairs": 30}, "test": {"prompts": 1, "pairs": 1}}
    assert report["test_file"]["source"] == str(test)
    assert report["fingerprint"] == "sha256:" + hashlib.sha256(train.read_bytes()).hexdigest()
    assert "test data:" in stdout and "saved DatasetDict" in stdout


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"prompt,answer,rank\np,\xff,1\n", "not valid UTF-8"),
        (b'prompt,answer,rank\np,a,1\np,b,"2\n', "a quoted field opens here"),
        (b"prompt,answer,rnak\np,a,1\n", "did you mean 'rnak'?"),
    ],
)
def test_cli_errors_exit_2_with_one_line_and_leave_no_output(
    tmp_path: Path, capsys, content, match, write_bytes
) -> None:
    bad = write_bytes(tmp_path / "bad.csv", content)
    out = tmp_path / "processed"
    code, _, err = cli(tmp_path, "--dataset_path", str(bad), "--output_dir", str(out), capsys=capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and match in err
    assert sorted(tmp_path.iterdir()) == [bad]


def test_cli_push_without_a_hub_id_fails_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "processed"
    code, _, err = cli(tmp_path, "--output_dir", str(out), "--dataset_push_to_hub", "true", capsys=capsys)
    assert code == 2 and "dataset_hub_id is not set" in err and not out.exists()


def test_cli_push_offline_is_one_line_and_keeps_the_local_dataset(tmp_path: Path, capsys) -> None:
    out = tmp_path / "processed"
    args = ["--output_dir", str(out), "--dataset_push_to_hub", "true", "--dataset_hub_id", "me/pairs"]
    code, _, err = cli(tmp_path, *args, capsys=capsys)  # HF_HUB_OFFLINE=1: the network layer refuses
    assert code == 2 and err.count("\n") == 1
    assert "cannot push the dataset to me/pairs: offline mode is on" in err and f"kept in {out}" in err
    assert (out / "data_report.json").is_file()


class FakeHub:
    """HfApi methods DatasetDict.push_to_hub calls, answering as the Hub would (nothing leaves the machine)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_status: int | None = None) -> None:
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import CommitInfo, RepoFolder

        self.commits: list[list[str]] = []
        self.uploaded: list[str] = []

        class Info:
            id = "me/pairs"
            sha = "0" * 40

        def repo_info(api, repo_id, **kwargs):
            if fail_status:
                import httpx2
                from huggingface_hub.errors import HfHubHTTPError

                request = httpx2.Request("GET", "https://huggingface.co/api/datasets/me/pairs")
                raise HfHubHTTPError("denied", response=httpx2.Response(fail_status, request=request))
            return Info()

        def preupload_lfs_files(api, repo_id, additions, **kwargs):
            self.uploaded += [a.path_in_repo for a in additions]

        def list_repo_tree(api, repo_id, path_in_repo="", **kwargs):
            return iter([RepoFolder(path="data", oid="f" * 40)] if not path_in_repo else [])

        def create_commit(api, repo_id, operations, **kwargs):
            self.commits.append([op.path_in_repo for op in operations])
            return CommitInfo(
                commit_url="https://huggingface.co/datasets/me/pairs/commit/1" + "0" * 39,
                commit_message=kwargs.get("commit_message", ""),
                commit_description="",
                oid="1" * 40,
            )

        for name, method in [
            ("repo_info", repo_info),
            ("preupload_lfs_files", preupload_lfs_files),
            ("list_repo_tree", list_repo_tree),
            ("create_commit", create_commit),
        ]:
            monkeypatch.setattr(HfApi, name, method)


def test_cli_pushes_the_processed_datasetdict(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = FakeHub(monkeypatch)
    out = tmp_path / "processed"
    args = ["--output_dir", str(out), "--dataset_push_to_hub", "true", "--dataset_hub_id", "me/pairs"]
    code, stdout, err = cli(tmp_path, *args, capsys=capsys)
    assert code == 0, err
    assert "pushed the dataset to https://huggingface.co/datasets/me/pairs/commit/" in stdout
    assert {Path(p).name.split("-")[0] for p in hub.uploaded} == {"train", "test"}
    assert "README.md" in hub.commits[-1]


def test_push_http_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ranked_frame, write_format
) -> None:
    FakeHub(monkeypatch, fail_status=403)
    dataset, _ = build_dataset(write_format(ranked_frame(), tmp_path / "in.csv"), 0.2, 3)
    with pytest.raises(UserError, match=r"the Hub answered HTTP 403 \(check HF_TOKEN has write access\)") as info:
        push_dataset(dataset, "me/pairs", kept_in="somewhere")
    assert "\n" not in str(info.value) and "kept in somewhere" in str(info.value)
