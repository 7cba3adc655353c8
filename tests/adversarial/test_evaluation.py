"""Adversarial inputs of `python -m pipeline.evaluation` (and what a pushed model reveals): every one ends in exit code
0 or 2, a one-line `error:` naming the flag or file, no traceback, and no partial or changed output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline.evaluation.cli import main

RANKED = "prompt,answer,rank\n" + "".join(
    f"why is the sky blue {i},because of light {i},1\nwhy is the sky blue {i},no,2\n" for i in range(4)
)
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "ranked.csv"
    path.write_text(RANKED)
    return path


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, *argv: str) -> str:
    """Exit code 2 and one `error:` line, the last on stderr; before it at most the progress bar of loading a model."""
    code, out, err = run(capsys, *argv)
    assert code == 2, err
    *before, last = err.strip().splitlines()
    assert "Traceback" not in err and last.startswith("error: "), err
    assert all(line.lstrip("\r").startswith("Loading weights") for line in before), err
    assert "{" not in out  # no result printed
    return last


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- flags ----------------------------------------------------------------------------------------------------------

FLAG_CASES = {
    "batch size 0": (["--batch_size", "0"], "error: --batch_size must be at least 1 (got 0)"),
    "negative batch size": (["--batch_size", "-3"], "error: --batch_size must be at least 1 (got -3)"),
    "batch size text": (["--batch_size", "many"], "error: argument --batch_size: invalid int value: 'many'"),
    "max_length 0": (["--max_length", "0"], "error: --max_length must be at least 8 tokens (got 0)"),
    "max_length 7": (["--max_length", "7"], "error: --max_length must be at least 8 tokens (got 7)"),
    "negative max_length": (["--max_length", "-512"], "error: --max_length must be at least 8 tokens (got -512)"),
    "float max_length": (["--max_length", "128.5"], "error: argument --max_length: invalid int value: '128.5'"),
    "max_length over positions": (
        ["--max_length", "513"],
        "error: --max_length 513 is above what the model {model} can read (512 tokens); use at most 512",
    ),
    "huge max_length": (
        ["--max_length", "1000000"],
        "error: --max_length 1000000 is above what the model {model} can read (512 tokens); use at most 512",
    ),
    "abbreviated flag": (["--batch", "4"], "error: unrecognized arguments: --batch 4"),
    "unknown flag": (["--learning_rate", "1"], "error: unrecognized arguments: --learning_rate 1"),
}


@pytest.mark.parametrize("case", sorted(FLAG_CASES))
def test_bad_flags_are_one_line_errors_naming_the_flag(case, capsys, tiny_model_dir, data, tmp_path) -> None:
    extra, expected = FLAG_CASES[case]
    out = tmp_path / "eval"
    err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--output", str(out), *extra)
    assert err.startswith(expected.replace("{model}", str(tiny_model_dir))), err
    assert not out.exists() and not list(tmp_path.glob(".eval*"))


@pytest.mark.parametrize("missing", ["--model", "--data"])
def test_a_required_flag_left_out_is_one_line(missing, capsys, tiny_model_dir, data) -> None:
    argv = {"--model": str(tiny_model_dir), "--data": str(data)}
    del argv[missing]
    err = refused(capsys, *[x for pair in argv.items() for x in pair])
    assert err.startswith(f"error: the following arguments are required: {missing}")


# ---- --data ---------------------------------------------------------------------------------------------------------

MISSING_DATA = ["answers.csv", "data/nope.jsonl", "/nonexistent/pairs.parquet", "./folder", "a/b/c", "typo"]


@pytest.mark.parametrize("name", MISSING_DATA)
def test_a_missing_data_path_names_the_data_flag(name, capsys, tiny_model_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    err = refused(capsys, "--model", str(tiny_model_dir), "--data", name)
    assert err.startswith(f"error: --data {name}: no such file or directory; give a ranked or pairwise file")
    assert "recipe" not in err and "test_path" not in err


def _dataset_dict(folder: Path, splits: tuple[str, ...]) -> Path:
    from datasets import Dataset, DatasetDict

    pairs = {"prompt": ["p", "q"], "chosen": ["good", "fine"], "rejected": ["bad", "poor"], "margin": [1.0, 1.0]}
    DatasetDict({name: Dataset.from_dict(pairs) for name in splits}).save_to_disk(str(folder))
    return folder


BAD_DATA = {
    "empty file": ("empty.csv", b"", "the file is empty"),
    "header only": ("header.csv", b"prompt,answer,rank\n", "has a header but no rows"),
    "no rank column": ("norank.csv", b"prompt,answer\np,a\n", "missing column rank"),
    "every prompt tied": ("tied.csv", b"prompt,answer,rank\np,a,1\np,b,1\n", "every row was dropped"),
    "spreadsheet": ("book.xlsx", b"PK\x03\x04", ".xlsx files are not read"),
    "utf-16": ("utf16.csv", "prompt,answer,rank\n".encode("utf-16"), "UTF-16"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_refused_before_scoring(case, capsys, tiny_model_dir, tmp_path) -> None:
    name, content, expected = BAD_DATA[case]
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "eval"
    err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(tmp_path / name), "--output", str(out))
    assert expected in err and not out.exists()


def test_a_saved_dataset_without_a_test_split_is_one_line(capsys, tiny_model_dir, tmp_path) -> None:
    folder = _dataset_dict(tmp_path / "pairs", ("train", "validation"))
    capsys.readouterr()  # the bars of saving it
    err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(folder))
    assert err == f"error: {folder}: has splits train, validation but none is 'test'; give a single test set"


def test_a_saved_dataset_with_one_split_is_scored(capsys, tiny_model_dir, tmp_path) -> None:
    folder = _dataset_dict(tmp_path / "pairs", ("train",))
    code, out, err = run(capsys, "--model", str(tiny_model_dir), "--data", str(folder))
    assert code == 0 and "Traceback" not in err and json.loads(out[out.index("{") : out.rindex("}") + 1])["num_pairs"]


def test_a_folder_that_is_not_a_dataset_is_one_line(capsys, tiny_model_dir, tmp_path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(tmp_path / "notes"))
    assert "not a dataset saved with save_to_disk" in err


@pytest.mark.skipif(ROOT, reason="root reads any file")
def test_an_unreadable_data_file_is_one_line(capsys, tiny_model_dir, data) -> None:
    data.chmod(0)
    try:
        err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(data))
    finally:
        data.chmod(0o644)
    assert str(data) in err and "ermission denied" in err


# ---- --output -------------------------------------------------------------------------------------------------------


def test_an_output_holding_a_users_file_is_refused_and_untouched(capsys, tiny_model_dir, data, tmp_path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--output", str(out))
    assert err.startswith(f"error: --output {out} already holds files this program did not write (notes.txt)")
    assert snapshot(out) == before


def test_an_earlier_report_with_a_users_file_added_is_refused(capsys, tiny_model_dir, data, tmp_path) -> None:
    out = tmp_path / "eval"
    assert run(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--output", str(out))[0] == 0
    (out / "my-notes.md").write_text("mine")
    before = snapshot(out)
    err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--output", str(out))
    assert "my-notes.md" in err and snapshot(out) == before


def test_an_earlier_report_is_replaced_whole(capsys, tiny_model_dir, data, tmp_path) -> None:
    out = tmp_path / "eval"
    for batch_size in ("2", "3"):
        code, _, err = run(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--output", str(out),
                           "--batch_size", batch_size)  # fmt: skip
        assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["eval_results.json", "summary.json", "pairs.jsonl", "report.md", "report.png"]
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("where", ["a file", "under a file", "the model folder", "the data's folder", "cwd"])
def test_an_output_that_cannot_be_replaced_is_refused_before_work(where, capsys, tiny_model_dir, data, tmp_path,
                                                                 monkeypatch) -> None:  # fmt: skip
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (tmp_path / "file.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    out = {"a file": tmp_path / "file.txt", "under a file": tmp_path / "file.txt" / "eval", "the model folder": model,
           "the data's folder": data.parent, "cwd": Path(".")}[where]  # fmt: skip
    before = snapshot(tmp_path)
    err = refused(capsys, "--model", str(model), "--data", str(data), "--output", str(out))
    assert err.startswith("error: --output ")
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(ROOT, reason="root writes anywhere")
def test_an_output_in_a_read_only_folder_is_refused_before_work(capsys, tiny_model_dir, data, tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--output", str(locked / "eval"))
    finally:
        locked.chmod(0o755)
    assert "permission denied" in err and not (locked / "eval").exists()


# ---- --model, --base_model, --heldout_only --------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--model", "--base_model"])
def test_a_missing_model_folder_is_one_line(flag, capsys, tiny_model_dir, data, tmp_path) -> None:
    argv = {"--model": str(tiny_model_dir), "--base_model": None, "--data": str(data), "--output": str(tmp_path / "e")}
    argv[flag] = str(tmp_path / "my_modle")
    err = refused(capsys, *[x for pair in argv.items() if pair[1] for x in pair])
    assert "my_modle" in err and not (tmp_path / "e").exists()


def test_heldout_only_without_a_data_report_is_one_line(capsys, tiny_model_dir, data) -> None:
    err = refused(capsys, "--model", str(tiny_model_dir), "--data", str(data), "--heldout_only")
    assert err == (
        "error: --heldout_only: cannot tell which pairs come from training prompts: there is no data_report.json in "
        "the model folder (a model trained elsewhere)"
    )


def test_heldout_only_when_every_pair_is_a_training_pair_is_one_line(capsys, tiny_model_dir, data, tmp_path) -> None:
    import pyarrow as pa

    from pipeline.data import read_pairs
    from pipeline.evaluation.overlap import train_prompts_record

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    pairs, _ = read_pairs(data)
    record = train_prompts_record(pa.array(pairs["prompt"].tolist()), salt="s")
    (model / "data_report.json").write_text(json.dumps({"train_prompts": record}))
    err = refused(capsys, "--model", str(model), "--data", str(data), "--heldout_only")
    assert err.startswith("error: --heldout_only: all 4 pairs of --data come from prompts the model was trained on")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe"])
def test_a_broken_data_report_means_unknown_overlap(content, capsys, tiny_model_dir, data, tmp_path) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "data_report.json").write_text(content, encoding="latin-1")
    code, out, err = run(capsys, "--model", str(model), "--data", str(data))
    assert code == 0 and "Traceback" not in err
    assert "warning: overlap with the model's training data is unknown: the model's data_report.json" in err


# ---- what a pushed model reveals ------------------------------------------------------------------------------------


def test_local_paths_become_names_in_what_is_pushed(tmp_path: Path, monkeypatch) -> None:
    from pipeline.publishing.model_card import without_local_paths

    data = tmp_path / "private" / "answers.csv"
    data.parent.mkdir()
    data.write_text(RANKED)
    saved = tmp_path / "private" / "pairs"
    saved.mkdir()
    base = tmp_path / "models" / "my-base"
    base.mkdir(parents=True)
    recipe = {"dataset_path": str(data), "test_path": None, "model_name_or_path": str(base), "seed": 3}
    report = {
        "source": f"{saved} [train split]",
        "test_file": {"source": str(data)},
        "notes": [f"the test split of {saved} is not used: test_path {data} replaces it"],
        "split_method": f"test set {data}; train prompts found in it are dropped",
        "hub": "someone/dataset",
        "missing": "/not/here.csv",
    }
    local = (str(data), str(saved), str(base))
    text = json.dumps([without_local_paths(recipe, local), without_local_paths(report, local)])
    assert str(tmp_path) not in text and "private" not in text
    assert without_local_paths(recipe, local) == {"dataset_path": "answers.csv", "test_path": None,
                                                  "model_name_or_path": "my-base", "seed": 3}  # fmt: skip
    cleaned = without_local_paths(report, local)
    assert cleaned["source"] == "pairs [train split]" and cleaned["hub"] == "someone/dataset"
    assert cleaned["notes"] == ["the test split of pairs is not used: test_path answers.csv replaces it"]
    assert cleaned["missing"] == "/not/here.csv"  # not a local path of this run: left as it is
    monkeypatch.chdir(tmp_path)  # "." is the current folder by name, and no other dot changes
    assert without_local_paths({"dataset_path": ".", "note": "v1.2 of ./x"}, (".",)) == {
        "dataset_path": tmp_path.name,
        "note": "v1.2 of ./x",
    }


def test_the_model_card_records_no_local_path(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd

    from pipeline.evaluation.accuracy import build_report
    from pipeline.publishing.model_card import without_local_paths, write_model_card

    data = tmp_path / "home" / "alice" / "answers.csv"
    data.parent.mkdir(parents=True)
    data.write_text(RANKED)
    pairs = pd.DataFrame({"prompt": ["p", "q"], "chosen": ["a", "b"], "rejected": ["c", "d"], "margin": [1.0, 1.0]})
    result = {"chosen_scores": [1.0, 2.0], "rejected_scores": [0.0, 3.0], "pairwise_accuracy": 0.5, "num_pairs": 2,
              "num_correct": 1, "num_ties": 0}  # fmt: skip
    report = build_report(pairs, result)
    metrics = {**report["model"], "reward_mean": 0.0, "reward_std": 1.0, "ci95": [0.0, 1.0]}
    local = (str(data), None, "embedded:all-MiniLM-L6-v2")
    (tmp_path / "out").mkdir()
    card = write_model_card(
        tmp_path / "out",
        base_model="embedded:all-MiniLM-L6-v2",
        metrics={**metrics, "pairwise_accuracy": float(np.float64(0.5))},
        evaluation=report,
        data_report=without_local_paths({"source": str(data), "splits": {}}, local),
        recipe=without_local_paths({"dataset_path": str(data), "test_path": None}, local),
        max_length=512,
        truncation_side="left",
    )
    text = card.read_text()
    assert "answers.csv" in text and str(tmp_path) not in text and "alice" not in text
