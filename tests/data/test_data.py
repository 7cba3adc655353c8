"""Data step: ranking -> pairs, prompt-level split, drops and errors, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import REPO, write_csv

from pipeline.core.errors import UserError
from pipeline.data.dataset import build_dataset, load_ranked, make_pairs, split_by_prompt


def ranked(rows: list[tuple[str, str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["prompt", "answer", "rank"]).assign(rank=lambda d: d["rank"].astype(float))


def test_k_answers_become_all_ordered_pairs_with_rank_gap_margin() -> None:
    rows = ranked([("p", "c", 3), ("p", "a", 1), ("p", "d", 4), ("p", "b", 2), ("q", "x", 2), ("q", "y", 1)])
    pairs, tied = make_pairs(rows)
    got = {(r.prompt, r.chosen, r.rejected, r.margin) for r in pairs.itertuples()}
    assert got == {
        ("p", "a", "b", 1.0), ("p", "a", "c", 2.0), ("p", "a", "d", 3.0),
        ("p", "b", "c", 1.0), ("p", "b", "d", 2.0), ("p", "c", "d", 1.0),
        ("q", "y", "x", 1.0),
    }  # fmt: skip
    assert len(pairs) == 6 + 1 and tied == 0


def test_tied_ranks_form_no_pair_and_are_counted() -> None:
    pairs, tied = make_pairs(ranked([("p", "a", 1), ("p", "b", 1), ("p", "c", 2)]))
    assert sorted(zip(pairs.chosen, pairs.rejected, strict=True)) == [("a", "c"), ("b", "c")]
    assert tied == 1


def test_seed_file_quirks_float_ranks_multiline_and_empty_answers(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "quirks.csv",
        "prompt,answer,rank\n"
        'Tell a joke,"Line one\nline two with ""quotes"" 🚀",2.0\n'
        "Tell a joke,,1.0\n"
        "Tell a joke,Short one,1.0\n"
        "Say hi,Hello!,1\n"
        'Say hi,"",2\n'
        "Say hi,Hey,2\n",
    )
    rows, report = load_ranked(path)
    assert report.rows_read == 6
    assert report.dropped == {"empty_answer": 2}
    assert rows.loc[rows["rank"] == 2.0, "answer"].iloc[0] == 'Line one\nline two with "quotes" 🚀'
    pairs, _ = make_pairs(rows)
    assert set(zip(pairs.chosen, pairs.rejected, strict=True)) == {
        ("Short one", 'Line one\nline two with "quotes" 🚀'),
        ("Hello!", "Hey"),
    }


def test_empty_answers_are_an_error_when_not_dropped(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "e.csv", "prompt,answer,rank\np,a,1\np,,2\np,b,3\n")
    with pytest.raises(UserError, match=r"row 3: empty answer"):
        load_ranked(path, drop_empty_answers=False)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("prompt,response,rank\np,a,1\n", r"missing column answer \(found .prompt., .response., .rank.\)"),
        ("prompt,answer,rank\np,a,1\np,b,first\n", r"row 3: rank 'first' is not a positive number"),
        ("prompt,answer,rank\np,a,1\np,b,\n", r"row 3: rank '' is not a positive number"),
        ("prompt,answer,rank\np,a,-1\np,b,2\n", r"row 2: rank '-1'"),
        ("prompt,answer,rank\np,a,1\np,a,2\n", r"rows 2, 3: the same prompt and answer have different ranks"),
        ("", r"the file is empty"),
        ("prompt,answer,rank\n", r"has a header but no rows"),
        ("prompt,answer,rank\np,a,1\nq,b,1\n", r"every row was dropped"),
    ],
)
def test_bad_input_is_a_one_line_error_naming_the_row(tmp_path: Path, content: str, message: str) -> None:
    path = write_csv(tmp_path / "bad.csv", content)
    with pytest.raises(UserError, match=message) as info:
        load_ranked(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_split_is_by_prompt_seeded_deterministic_and_row_order_free() -> None:
    rows = ranked([(f"prompt {i}", f"answer {j}", j + 1) for i in range(40) for j in range(3)])
    pairs, _ = make_pairs(rows)
    a = split_by_prompt(pairs, test_size=0.25, seed=7)
    b = split_by_prompt(pairs.sample(frac=1.0, random_state=1), test_size=0.25, seed=7)
    c = split_by_prompt(pairs, test_size=0.25, seed=8)
    train, test = set(a["train"].prompt), set(a["test"].prompt)
    assert not train & test and len(train | test) == 40
    assert len(test) == 10 and len(a["test"]) == 30
    assert set(b["test"].prompt) == test  # shuffled rows, same split
    assert set(c["test"].prompt) != test  # the seed matters


def test_prompts_differing_in_case_or_whitespace_stay_in_one_split() -> None:
    rows = ranked(
        [(f"Prompt {i}", "a", 1) for i in range(20)]
        + [(f"Prompt {i}", "b", 2) for i in range(20)]
        + [(f"  prompt   {i} ", "c", 1) for i in range(20)]
        + [(f"  prompt   {i} ", "d", 2) for i in range(20)]
    )
    pairs, _ = make_pairs(rows)
    splits = split_by_prompt(pairs, test_size=0.3, seed=0)
    norm = {name: {" ".join(p.split()).lower() for p in s.prompt} for name, s in splits.items()}
    assert not norm["train"] & norm["test"]


def test_build_dataset_report_counts(tmp_path: Path) -> None:
    lines = ["prompt,answer,rank"] + [f"q{i},a{i},1\nq{i},b{i},2\nq{i},c{i},3" for i in range(10)] + ["q0,,1"]
    path = write_csv(tmp_path / "d.csv", "\n".join(lines) + "\n")
    dataset, report = build_dataset(path, test_size=0.2, split_seed=1)
    assert set(dataset) == {"train", "test"}
    assert set(dataset["train"].column_names) == {"prompt", "chosen", "rejected", "margin"}
    summary = report.as_dict()
    assert summary["rows_read"] == 31 and summary["rows_kept"] == 30
    assert summary["dropped_by_reason"] == {"empty_answer": 1}
    assert summary["prompts"] == 10 and summary["pairs"] == 30
    assert summary["splits"] == {"train": {"prompts": 8, "pairs": 24}, "test": {"prompts": 2, "pairs": 6}}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.data", *args], cwd=REPO, capture_output=True, text=True)


def test_data_cli_writes_datasetdict_and_report(tmp_path: Path) -> None:
    out = tmp_path / "processed"
    result = run_cli("--config", "recipes/quickstart.yaml", "--output_dir", str(out))
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
    result = run_cli("--config", "recipes/quickstart.yaml", "--dataset_path", str(bad), "--output_dir", str(out))
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "missing column rank" in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
