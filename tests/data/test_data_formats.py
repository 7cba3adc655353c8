"""Data step on real-world input: formats, shapes, column mapping, test files, row-level errors, report, Hub push."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import REPO

from pipeline.core.errors import UserError
from pipeline.data import dataset as data_module
from pipeline.data.dataset import ColumnMap, build_dataset, load_ranked, main, make_pairs, read_pairs, save_dataset

ROWS = [(f"prompt {i}", f"answer {i}-{j}", j + 1) for i in range(10) for j in range(3)]  # 10 prompts x 3 answers


def ranked_frame(rows=ROWS, columns=("prompt", "answer", "rank")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_format(frame: pd.DataFrame, path: Path) -> Path:
    """The same rows in any supported format (written with pandas/pyarrow, as other tools would)."""
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".json":
        frame.to_json(path, orient="records", force_ascii=False)
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def pair_set(dataset) -> set[tuple]:
    return {
        (r["prompt"], r["chosen"], r["rejected"], r["margin"]) for split in dataset.values() for r in split.to_list()
    }


def fails(path, match: str | None = None, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as info:
        build_dataset(path, 0.2, 1, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- formats -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_every_file_format_gives_the_same_pairs_split_and_counts(tmp_path: Path, suffix: str) -> None:
    reference, ref_report = build_dataset(write_format(ranked_frame(), tmp_path / "ref.csv"), 0.2, 3)
    dataset, report = build_dataset(write_format(ranked_frame(), tmp_path / f"in{suffix}"), 0.2, 3)
    assert pair_set(dataset) == pair_set(reference) and len(pair_set(dataset)) == 30
    assert set(dataset["test"]["prompt"]) == set(reference["test"]["prompt"])
    assert report.splits == ref_report.splits
    assert report.input_format == suffix.lstrip(".") and report.shape == "ranked"


def test_save_to_disk_dataset_directory_is_an_input(tmp_path: Path) -> None:
    from datasets import Dataset

    Dataset.from_pandas(ranked_frame()).save_to_disk(str(tmp_path / "rows"))
    dataset, report = build_dataset(tmp_path / "rows", 0.2, 3)
    assert report.input_format == "save_to_disk" and report.pairs == 30
    assert report.fingerprint.startswith("sha256:")
    assert "by prompt" in report.split_method


def test_save_to_disk_datasetdict_with_train_and_test_is_used_as_the_split(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    frame = ranked_frame()
    DatasetDict(
        {
            "train": Dataset.from_pandas(frame[frame.prompt != "prompt 0"], preserve_index=False),
            "test": Dataset.from_pandas(frame[frame.prompt == "prompt 0"], preserve_index=False),
            "validation": Dataset.from_pandas(frame.head(3), preserve_index=False),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    dataset, report = build_dataset(tmp_path / "dd", 0.5, 3)
    assert set(dataset["test"]["prompt"]) == {"prompt 0"} and dataset["test"].num_rows == 3
    assert dataset["train"].num_rows == 27
    assert report.test_file is not None and report.test_file.source.endswith("[test split]")
    assert any("validation" in note for note in report.notes)


def test_the_data_steps_own_output_directory_reads_back_as_pairwise_input(tmp_path: Path) -> None:
    first, report = build_dataset(write_format(ranked_frame(), tmp_path / "in.csv"), 0.2, 3)
    save_dataset(first, report, tmp_path / "processed")
    again, again_report = build_dataset(tmp_path / "processed", 0.2, 3)
    assert again_report.shape == "pairwise" and again_report.margin.startswith("from column")
    assert pair_set(again) == pair_set(first)
    assert set(again["test"]["prompt"]) == set(first["test"]["prompt"])


def test_a_hub_dataset_id_goes_through_load_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    seen = []

    def fake_load_dataset(name):
        seen.append(name)
        return datasets.DatasetDict({"train": datasets.Dataset.from_pandas(ranked_frame())})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset, report = build_dataset("someone/ranked-answers", 0.2, 3)
    assert seen == ["someone/ranked-answers"] and report.input_format == "hub" and report.pairs == 30


def test_a_hub_dataset_id_offline_is_a_one_line_error() -> None:
    message = fails("someone/not-cached-anywhere", r"offline mode is on \(HF_HUB_OFFLINE=1\)")
    assert "no such file or directory here" in message


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.csv", None, r"missing.csv: no such file"),
        ("sheet.xlsx", b"PK\x03\x04", r"\.xlsx files are not read; export the sheet as CSV"),
        ("utf16.csv", "prompt,answer,rank\np,a,1\n".encode("utf-16"), r"the file is UTF-16, not UTF-8"),
        ("broken.parquet", b"not parquet at all", r"not a readable Parquet file"),
    ],
)
def test_unreadable_inputs_are_one_line_errors(tmp_path: Path, name: str, content: bytes | None, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    fails(path, match)


# --- shapes and column mapping -----------------------------------------------------------------------------------


def test_score_column_higher_is_better_and_margin_is_the_score_gap(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "s.csv", b"prompt,answer,score\np,a,-1.5\np,b,2\nq,x,3\nq,y,3\nq,z,0\n")
    dataset, report = build_dataset(path, 0.5, 1)
    assert pair_set(dataset) == {("p", "b", "a", 3.5), ("q", "x", "z", 3.0), ("q", "y", "z", 3.0)}
    assert report.tied_pairs_skipped == 1 and report.columns["score"] == "score"
    rows, _ = load_ranked(path)
    assert "score" in rows and make_pairs(rows)[0].margin.tolist() == [3.5, 3.0, 3.0]


def test_rank_and_score_together_need_a_choice(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "b.csv", b"prompt,answer,rank,score\np,a,1,0\np,b,2,9\nq,a,1,0\nq,b,2,9\n")
    fails(path, r"has both a 'rank' and a 'score' column; keep one, or set score_column: ''")
    by_rank, _ = build_dataset(path, 0.5, 1, columns={"score_column": ""})
    by_score, _ = build_dataset(path, 0.5, 1, columns={"rank_column": ""})
    assert ("p", "a", "b", 1.0) in pair_set(by_rank) and ("p", "b", "a", 9.0) in pair_set(by_score)


def test_pairwise_shape_with_and_without_margin(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.csv", b"prompt,chosen,rejected\np,a,b\nq,c,d\n")
    dataset, report = build_dataset(path, 0.5, 1)
    assert report.shape == "pairwise" and report.margin == "1.0 (no margin column)"
    assert pair_set(dataset) == {("p", "a", "b", 1.0), ("q", "c", "d", 1.0)}
    path = write_bytes(tmp_path / "m.jsonl", b'{"prompt":"p","chosen":"a","rejected":"b","margin":2.5}\n' * 1)
    path.write_text(path.read_text() + '{"prompt":"q","chosen":"c","rejected":"d","margin":0}\n')
    dataset, _ = build_dataset(path, 0.5, 1)
    assert pair_set(dataset) == {("p", "a", "b", 2.5), ("q", "c", "d", 0.0)}


def test_pairwise_drops_empty_identical_duplicate_and_contradicting_rows(tmp_path: Path) -> None:
    content = b"prompt,chosen,rejected\np,a,b\np,a,b\nq,x,y\nq,y,x\nr,same,same \ns,,v\n,u,v\nt,u,v\n,,\n"
    dataset, report = build_dataset(write_bytes(tmp_path / "p.csv", content), 0.5, 1)
    assert report.dropped == {
        "empty_row": 1,
        "empty_prompt": 1,
        "empty_answer": 1,
        "chosen_equals_rejected": 1,
        "duplicate_row": 1,
        "contradicting_pair": 2,
    }
    assert report.rows_read == 9 and report.rows_kept == 2
    assert pair_set(dataset) == {("p", "a", "b", 1.0), ("t", "u", "v", 1.0)}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"prompt,chosen,rejected,margin\np,a,b,1\np,a,b,2\n", r"rows 2, 3: the same prompt, chosen and rejected have"),
        (b"prompt,chosen,rejected,margin\np,a,b,-1\n", r"row 2: margin '-1' is not a number >= 0"),
        (b"prompt,chosen,rejected\np,a,\nq,c,d\n", r"row 2: empty chosen or rejected \(set drop_empty_answers"),
        (b"prompt,chosen\np,a\n", r"missing column rejected"),
    ],
)
def test_pairwise_errors(tmp_path: Path, content: bytes, match: str) -> None:
    fails(write_bytes(tmp_path / "p.csv", content), match, drop_empty_answers=False)


def test_columns_are_mapped_by_recipe_names(tmp_path: Path) -> None:
    frame = ranked_frame(columns=("question", "response", "position"))
    path = write_format(frame, tmp_path / "mapped.csv")
    columns = ColumnMap(prompt="question", answer="response", rank="position")
    dataset, report = build_dataset(path, 0.2, 3, columns=columns)
    assert report.pairs == 30 and report.columns == {"prompt": "question", "answer": "response", "rank": "position"}
    pairwise = write_bytes(tmp_path / "pw.csv", b"q,good,bad\np,a,b\nr,c,d\n")
    _, report = build_dataset(pairwise, 0.5, 1, columns={"prompt_column": "q", "chosen": "good", "rejected": "bad"})
    assert report.shape == "pairwise" and report.pairs == 2


def test_header_case_and_spaces_are_forgiven_but_a_misspelt_column_gets_a_suggestion(tmp_path: Path) -> None:
    content = b" Prompt ,ANSWER,Rank\np,a,1\np,b,2\nq,a,1\nq,b,2\n"
    _, report = build_dataset(write_bytes(tmp_path / "c.csv", content), 0.5, 1)
    assert report.columns == {"prompt": "Prompt", "answer": "ANSWER", "rank": "Rank"}
    message = fails(write_bytes(tmp_path / "m.csv", b"prompt,answer,rnak\np,a,1\n"), r"missing column rank")
    assert "did you mean 'rnak'?" in message and "rank_column" in message
    message = fails(write_bytes(tmp_path / "m2.csv", b"promt,answr,rank\np,a,1\n"), r"missing columns prompt")
    assert "did you mean 'promt'?" in message and "did you mean 'answr'?" in message
    fails(write_bytes(tmp_path / "d.csv", b"prompt,answer,rank,rank\np,a,1,1\n"), r"column 'rank' appears 2 times")


def test_input_shape_can_be_forced(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.csv", b"prompt,chosen,rejected\np,a,b\n")
    fails(path, r"missing columns answer, rank", input_shape="ranked")
    fails(path, r"input_shape must be one of auto, ranked, pairwise", input_shape="pairs")


def test_read_pairs_scores_a_whole_file_of_either_shape(tmp_path: Path) -> None:
    pairs, _ = read_pairs(write_bytes(tmp_path / "p.csv", b"prompt,chosen,rejected\np,a,b\nq,c,d\n"))
    assert list(pairs.columns) == ["prompt", "chosen", "rejected", "margin"] and len(pairs) == 2
    pairs, _ = read_pairs(write_format(ranked_frame(), tmp_path / "r.csv"))
    assert len(pairs) == 30


# --- test file ---------------------------------------------------------------------------------------------------


def test_a_separate_test_file_replaces_the_split_and_has_its_own_report(tmp_path: Path) -> None:
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


def test_a_missing_test_file_is_an_error(tmp_path: Path) -> None:
    train = write_format(ranked_frame(), tmp_path / "train.csv")
    fails(train, r"nope.csv: no such file \(set test_path in the recipe", test_path=tmp_path / "nope.csv")


# --- split and fingerprint ---------------------------------------------------------------------------------------


def test_split_and_counts_are_stable_when_input_rows_are_shuffled(tmp_path: Path) -> None:
    frame = ranked_frame([(f"p{i}", f"a{j}", j + 1) for i in range(50) for j in range(4)])
    a, report_a = build_dataset(write_format(frame, tmp_path / "a.csv"), 0.2, 11)
    shuffled = frame.sample(frac=1.0, random_state=5)
    b, report_b = build_dataset(write_format(shuffled, tmp_path / "b.csv"), 0.2, 11)
    assert set(a["test"]["prompt"]) == set(b["test"]["prompt"]) and pair_set(a) == pair_set(b)
    assert report_a.splits == report_b.splits
    assert report_a.fingerprint != report_b.fingerprint  # different bytes, different fingerprint
    c, _ = build_dataset(write_format(frame, tmp_path / "a.csv"), 0.2, 12)
    assert set(c["test"]["prompt"]) != set(a["test"]["prompt"])


def test_the_fingerprint_is_the_sha256_of_the_input_bytes(tmp_path: Path) -> None:
    path = write_format(ranked_frame(), tmp_path / "in.csv")
    _, report = build_dataset(path, 0.2, 3)
    assert report.fingerprint == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_vectorised_prompt_normalisation_matches_python(tmp_path: Path) -> None:
    random.seed(0)
    pieces = ["a", "B", " ", "  ", "\t", "\n", "\x0b", "\x1c", "\u00a0", "É", "ß", "\u2003", "İ", "\r\n"]
    values = list(dict.fromkeys("".join(random.choices(pieces, k=random.randint(0, 10))) for _ in range(3000)))
    key_of, keys = data_module._prompt_keys(pa.array(values, pa.large_string()))
    assert [keys[k] for k in key_of] == [" ".join(v.split()).lower() for v in values]


# --- row-level problems: drops --------------------------------------------------------------------------------


def test_every_drop_reason_is_counted(tmp_path: Path) -> None:
    content = (
        "prompt,answer,rank\n"
        "p,a,1\np,b,2\n"  # kept
        ",x,1\n"  # empty prompt
        "p,   ,3\n"  # empty answer
        "p,a,1\n"  # duplicate (same rank)
        "single,only,1\n"  # one answer
        "tied,x,1\ntied,y,1\n"  # all answers tied: no pair
        "some tied,x,1\nsome tied,y,1\nsome tied,z,2\n"  # kept; the x-y tie is no pair
        ",,\n"  # empty row (spreadsheet export)
    )
    dataset, report = build_dataset(write_bytes(tmp_path / "d.csv", content.encode()), 0.5, 1)
    assert report.dropped == {
        "empty_row": 1,
        "empty_prompt": 1,
        "empty_answer": 1,
        "duplicate_row": 1,
        "prompt_with_one_answer": 1,
        "prompt_all_answers_tied": 2,
    }
    assert report.rows_read == 12 and report.rows_kept == 5 and report.tied_pairs_skipped == 1
    assert report.pairs == 3 and report.prompts == 2
    assert sum(s["pairs"] for s in report.splits.values()) == 3


def test_a_byte_order_mark_is_accepted_and_stripped(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "bom.csv", b"\xef\xbb\xbfprompt,answer,rank\np,a,1\np,b,2\nq,c,1\nq,d,2\n")
    dataset, report = build_dataset(path, 0.5, 1)
    assert report.columns["prompt"] == "prompt" and report.pairs == 2
    assert all(not p.startswith("\ufeff") for p in [*dataset["train"]["prompt"], *dataset["test"]["prompt"]])
    lines = [b'{"prompt":"%s","answer":"%s","rank":%d}' % (p, a, r) for p, a, r in [(b"p", b"a", 1), (b"p", b"b", 2)]]
    lines += [b'{"prompt":"q","answer":"c","rank":1}', b'{"prompt":"q","answer":"d","rank":2}']
    jsonl = write_bytes(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    assert build_dataset(jsonl, 0.5, 1)[1].pairs == 2


def test_mixed_number_and_text_ranks_in_jsonl_are_read(tmp_path: Path) -> None:
    content = b'{"prompt":"p","answer":"a","rank":1}\n{"prompt":"p","answer":"b","rank":"2"}\n'
    content += b'{"prompt":"q","answer":"a","rank":1.0}\n{"prompt":"q","answer":"b","rank":"2.0"}\n'
    assert build_dataset(write_bytes(tmp_path / "m.jsonl", content), 0.5, 1)[1].pairs == 2


# --- row-level problems: errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("zero.csv", b"prompt,answer,rank\np,a,0\np,b,1\n", r"row 2: rank '0' is not a positive number"),
        ("inf.csv", b"prompt,answer,rank\np,a,1\np,b,inf\n", r"row 3: rank 'inf' is not a positive number"),
        ("score.csv", b"prompt,answer,score\np,a,1\np,b,high\n", r"row 3: score 'high' is not a number"),
        ("null.jsonl", b'{"prompt":"p","answer":"a","rank":null}\n', r"line 1: rank is missing"),
        (
            "mapped.csv",
            b"prompt,answer,stars\np,a,x\n",
            r"row 2: rank \(column 'stars'\) 'x' is not a positive number",
        ),
        ("conflict.tsv", b"prompt\tanswer\trank\np\ta\t1\np\tb\t2\np\ta\t2\n", r"rows 2, 4: the same prompt and"),
        ("empty.tsv", b"", r"the file is empty; expected a header row"),
        ("blank.csv", b"\n \n\r\n", r"the file is empty"),
        ("header.tsv", b"prompt\tanswer\trank\n", r"has a header but no rows"),
        ("empty.jsonl", b"\n\n", r"the file is empty; expected one JSON object per line"),
        ("all.csv", b"prompt,answer,rank\np,a,1\n,b,2\n", r"every row was dropped \(rows read 2, kept 0, dropped 2"),
        ("tied.csv", b"prompt,answer,rank\np,a,1\np,b,1\n", r"every row was dropped .*prompt_all_answers_tied: 2"),
        ("first.csv", b"\nprompt,answer,rank\n", r"row 1 is empty; the first row must be the header"),
        ("nested.jsonl", b'{"prompt":[{"role":"user"}],"answer":"a","rank":1}\n', r"column 'prompt' holds list"),
        ("mixed.jsonl", b'{"prompt":[1],"answer":"a","rank":1}\n{"prompt":"p","rank":"2"}\n', r"line 1: column"),
        ("bad.jsonl", b'{"prompt":"p","answer":"a","rank":1}\n\n{"prompt":', r"line 3 is not valid JSON"),
        ("array.json", b'[{"prompt":"p","answer":"a","rank":1}, 3]', r"record 2 is not a JSON object"),
    ],
)
def test_row_level_errors_name_file_row_and_reason(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = write_bytes(tmp_path / name, content)
    columns = {"rank_column": "stars"} if name == "mapped.csv" else None
    message = fails(path, match, columns=columns)
    assert message.startswith(str(path))


def test_invalid_utf8_names_the_row_or_the_header_byte(tmp_path: Path) -> None:
    body = b"p,a,1\np,b,2\n"
    message = fails(write_bytes(tmp_path / "row.csv", b"prompt,answer,rank\n" + body + b"q,\xe9t\xe9,1\nq,b,2\n"))
    assert "row 4: column 'answer' is not valid UTF-8; re-save the file as UTF-8" in message
    message = fails(write_bytes(tmp_path / "head.csv", b"prompt,r\xe9ponse,rank\n" + body))
    assert "row 1 (the header) is not valid UTF-8 at byte offset 8" in message
    message = fails(write_bytes(tmp_path / "row.jsonl", b'{"prompt":"p","answer":"\xff","rank":1}\n'))
    assert "line 1" in message and "not valid UTF-8" in message
    # Invalid bytes in a column that is not used are harmless.
    ok = write_bytes(tmp_path / "other.csv", b"prompt,answer,rank,note\np,a,1,\xff\np,b,2,x\n")
    rows, _ = load_ranked(ok)
    assert len(rows) == 2


@pytest.mark.parametrize(
    ("content", "match"),
    [
        # The quote is never closed and swallows the rest of the file: pyarrow alone would read this silently.
        (b'prompt,answer,rank\np,a,1\np,b,"2\nq,c,1\nq,d,2\n', r"row 3 \(line 3\): a quoted field opens here"),
        (b'prompt,answer,rank\np,a,1\np,"b,2\nq,c,1\n', r"row 3 \(line 3\): a quoted field opens here"),
        (b'"prompt,answer,rank\np,a,1\n', r"row 1 \(line 1\): a quoted field opens here"),
        # A multi-line answer before the problem: row and line differ.
        (b'prompt,answer,rank\np,"x\ny",1\np,"b,2\n', r"row 3 \(line 4\): a quoted field opens here"),
        (b"prompt,answer,rank\np,a,1\np,b,c,2\n", r"row 3 \(line 3\) has 4 fields but the header has 3"),
    ],
)
def test_unterminated_quotes_and_wrong_field_counts_name_the_row(tmp_path: Path, content: bytes, match: str) -> None:
    fails(write_bytes(tmp_path / "q.csv", content), match)


def test_quotes_inside_unquoted_fields_are_fine(tmp_path: Path) -> None:
    content = b'prompt,answer,rank\np,a 5" screen,1\np,b,2\nq,"say ""hi""",1\nq,d,2\n'
    dataset, _ = build_dataset(write_bytes(tmp_path / "q.csv", content), 0.5, 1)
    assert ("p", 'a 5" screen', "b", 1.0) in pair_set(dataset) and ("q", 'say "hi"', "d", 1.0) in pair_set(dataset)


def test_row_numbers_count_blank_lines_as_a_spreadsheet_does(tmp_path: Path) -> None:
    content = b"prompt,answer,rank\n\np,a,1\n\n\np,b,oops\n"
    fails(write_bytes(tmp_path / "b.csv", content), r"row 6: rank 'oops'")
    jsonl = b'{"prompt":"p","answer":"a","rank":1}\n\n  \n{"prompt":"p","answer":"b","rank":-2}\n'
    fails(write_bytes(tmp_path / "b.jsonl", jsonl), r"line 4: rank -2 is not a positive number")


def test_too_many_pairs_is_an_error_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_module, "MAX_PAIRS", 5)
    rows = [("p", f"a{j}", j + 1) for j in range(5)]  # C(5,2) = 10 pairs
    fails(write_format(ranked_frame(rows), tmp_path / "k.csv"), r"10 pairs from prompts with up to 5 answers")


# --- CLI: report next to the dataset, errors, push -----------------------------------------------------------


def cli(tmp_path: Path, *args: str, capsys=None) -> tuple[int, str, str]:
    try:
        main(["--config", str(REPO / "recipes/quickstart.yaml"), *args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code)
    out, err = capsys.readouterr() if capsys else ("", "")
    return code, out, err


def test_cli_saves_the_report_with_every_figure_next_to_the_dataset(tmp_path: Path, capsys) -> None:
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
def test_cli_errors_exit_2_with_one_line_and_leave_no_output(tmp_path: Path, capsys, content, match) -> None:
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


def test_push_http_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeHub(monkeypatch, fail_status=403)
    dataset, _ = build_dataset(write_format(ranked_frame(), tmp_path / "in.csv"), 0.2, 3)
    with pytest.raises(UserError, match=r"the Hub answered HTTP 403 \(check HF_TOKEN has write access\)") as info:
        data_module.push_dataset(dataset, "me/pairs", kept_in="somewhere")
    assert "\n" not in str(info.value) and "kept in somewhere" in str(info.value)


def test_large_ranked_file_takes_the_vectorised_path(tmp_path: Path) -> None:
    """Not a timing test: 20,000 rows with random order, ties and duplicates give the same pairs as make_pairs."""
    rng = np.random.default_rng(0)
    n = 20_000
    frame = pd.DataFrame(
        {"prompt": [f"p{i}" for i in rng.integers(0, 4000, n)], "answer": [f"a{i}" for i in rng.integers(0, 6, n)]}
    ).drop_duplicates()
    frame["rank"] = rng.integers(1, 4, len(frame))
    dataset, report = build_dataset(write_format(frame, tmp_path / "big.csv"), 0.2, 1)
    rows, _ = load_ranked(tmp_path / "big.csv")
    expected, tied = make_pairs(rows)
    assert pair_set(dataset) == set(expected.itertuples(index=False, name=None))
    assert report.tied_pairs_skipped == tied and report.pairs == len(expected)
