"""The split: by prompt (case/whitespace-normalised), seeded and independent of row order, or a given test set; the
report's counts per split and the input's fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

from helpers import write_csv

from pipeline.data import build_dataset

# --- prompt-level split ------------------------------------------------------------------------------------------


def test_split_is_by_prompt_seeded_deterministic_and_row_order_free(tmp_path: Path, ranked_frame, write_format) -> None:
    frame = ranked_frame([(f"prompt {i}", f"answer {j}", j + 1) for i in range(40) for j in range(3)])
    a, _ = build_dataset(write_format(frame, tmp_path / "a.csv"), test_size=0.25, split_seed=7)
    shuffled = frame.sample(frac=1.0, random_state=1)
    b, _ = build_dataset(write_format(shuffled, tmp_path / "b.csv"), test_size=0.25, split_seed=7)
    c, _ = build_dataset(write_format(frame, tmp_path / "c.csv"), test_size=0.25, split_seed=8)
    train, test = set(a["train"]["prompt"]), set(a["test"]["prompt"])
    assert not train & test and len(train | test) == 40
    assert len(test) == 10 and a["test"].num_rows == 30
    assert set(b["test"]["prompt"]) == test  # shuffled rows, same split
    assert set(c["test"]["prompt"]) != test  # the seed matters


def test_prompts_differing_in_case_or_whitespace_stay_in_one_split(tmp_path: Path, ranked_frame, write_format):
    frame = ranked_frame(
        [(f"Prompt {i}", "a", 1) for i in range(20)]
        + [(f"Prompt {i}", "b", 2) for i in range(20)]
        + [(f"  prompt   {i} ", "c", 1) for i in range(20)]
        + [(f"  prompt   {i} ", "d", 2) for i in range(20)]
    )
    splits, report = build_dataset(write_format(frame, tmp_path / "case.csv"), test_size=0.3, split_seed=0)
    assert report.pairs == 40  # both spellings are read as written
    norm = {name: {" ".join(p.split()).lower() for p in s["prompt"]} for name, s in splits.items()}
    assert not norm["train"] & norm["test"]


def test_split_and_counts_are_stable_when_input_rows_are_shuffled(
    tmp_path: Path, ranked_frame, write_format, pair_set
) -> None:
    frame = ranked_frame([(f"p{i}", f"a{j}", j + 1) for i in range(50) for j in range(4)])
    a, report_a = build_dataset(write_format(frame, tmp_path / "a.csv"), 0.2, 11)
    shuffled = frame.sample(frac=1.0, random_state=5)
    b, report_b = build_dataset(write_format(shuffled, tmp_path / "b.csv"), 0.2, 11)
    assert set(a["test"]["prompt"]) == set(b["test"]["prompt"]) and pair_set(a) == pair_set(b)
    assert report_a.splits == report_b.splits
    assert report_a.fingerprint != report_b.fingerprint  # different bytes, different fingerprint
    c, _ = build_dataset(write_format(frame, tmp_path / "a.csv"), 0.2, 12)
    assert set(c["test"]["prompt"]) != set(a["test"]["prompt"])


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


def test_the_fingerprint_is_the_sha256_of_the_input_bytes(tmp_path: Path, ranked_frame, write_format) -> None:
    path = write_format(ranked_frame(), tmp_path / "in.csv")
    _, report = build_dataset(path, 0.2, 3)
    assert report.fingerprint == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# --- a given test set --------------------------------------------------------------------------------------------


def test_a_separate_test_file_replaces_the_split_and_has_its_own_report(
    tmp_path: Path, ranked_frame, write_format
) -> None:
    train = write_format(ranked_frame(), tmp_path / "train.csv")
    test_rows = [("Prompt   0", "x", 1), ("Prompt   0", "y", 2), ("new", "u", 2), ("new", "v", 1), ("new", "", 3)]
    test = write_format(ranked_frame(test_rows), tmp_path / "test.jsonl")
    dataset, report = build_dataset(train, 0.2, 3, test_path=test)
    assert set(dataset["test"]["prompt"]) == {"Prompt   0", "new"} and dataset["test"].num_rows == 2
    assert "prompt 0" not in set(dataset["train"]["prompt"])  # same prompt after normalising: held out only
    assert report.dropped == {"prompt_in_test_file": 3} and report.splits["train"] == {"prompts": 9, "pairs": 27}
    as_dict = report.as_dict()
    assert as_dict["test_file"]["source"] == str(test) and as_dict["test_file"]["dropped_by_reason"] == {
        "empty_answer": 1
    }
    assert as_dict["test_file"]["fingerprint"] == "sha256:" + hashlib.sha256(test.read_bytes()).hexdigest()
    assert "test data:" in report.summary() and "test set" in report.split_method


def test_a_missing_test_file_is_an_error(tmp_path: Path, ranked_frame, write_format, fails) -> None:
    train = write_format(ranked_frame(), tmp_path / "train.csv")
    fails(train, r"nope.csv: no such file \(set test_path in the recipe", test_path=tmp_path / "nope.csv")
